/*
 * stomp.c: the classic memory stomp, for `make demo`.
 *
 * A session struct holds a user name and, right after it, a security token.
 * issue_token() sets the token; set_user() copies a name into the 8-byte
 * user field without checking its length, and a long name runs over the
 * token. The program prints a corrupted token and nobody knows why.
 *
 *   memtrap run --symbol session+8 --len 8 -- ./stomp
 *
 * names both writers: issue_token (the legitimate write) and set_user (the
 * stomp), with each old -> new value.
 */
#include <stdint.h>
#include <stdio.h>
#include <string.h>

struct session {
	char user[8];
	uint64_t token;
};

struct session session;

__attribute__((noinline)) void issue_token(uint64_t token)
{
	session.token = token;
}

__attribute__((noinline)) void set_user(const char *name)
{
	size_t n = strlen(name);
	for (size_t i = 0; i <= n; i++) /* no bounds check: the bug */
		session.user[i] = name[i];
}

int main(int argc, char **argv)
{
	const char *name = argc > 1 ? argv[1] : "administrator";
	issue_token(0x5ec0de5ec0de);
	set_user(name);
	printf("user %s, token %#llx\n", session.user, (unsigned long long)session.token);
	return session.token == 0x5ec0de5ec0de ? 0 : 3;
}
