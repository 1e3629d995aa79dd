/*
 * heapstomp.c: the same stomp on the heap, for `make demo`.
 *
 * Each request gets a 24-byte name buffer and a 24-byte credential block,
 * allocated one after the other. copy_name() copies the name without a
 * length check; a long name runs over the allocator's header of the next
 * chunk and into the credentials. Nobody knows the blocks' addresses
 * before the program runs:
 *
 *   memtrap run --heap size=24,site=new_credentials -- ./heapstomp
 *
 * watches every block new_credentials() allocates, from its allocation on,
 * and names both writers: grant() and the stomp, copy_name().
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct credentials {
	long uid;
	long flags;
	long expires;
};

__attribute__((noinline)) struct credentials *new_credentials(void)
{
	return malloc(sizeof(struct credentials));
}

__attribute__((noinline)) void grant(struct credentials *c, long uid)
{
	c->uid = uid;
}

__attribute__((noinline)) void copy_name(char *dst, const char *name)
{
	size_t n = strlen(name);
	for (size_t i = 0; i <= n; i++) /* no bounds check: the bug */
		dst[i] = name[i];
}

int main(int argc, char **argv)
{
	const char *name = argc > 1 ? argv[1] : "a-rather-long-user-name-it-is-indeed";
	char *buf = malloc(24);
	struct credentials *c = new_credentials();
	grant(c, 1000);
	copy_name(buf, name);
	printf("user %s, uid %ld\n", buf, c->uid);
	return c->uid == 1000 ? 0 : 3;
}
