/* Fixture for pkg/symbols' DWARF support: functions spread over lines, and
 * variables that only DWARF describes fully. Run with "addrs" it prints the
 * addresses and sizes the compiler assigned, for the test to check Resolve
 * against. */
#include <stddef.h>
#include <stdio.h>
#include <string.h>

struct pair {
	short a;
	short b;
};

struct session {
	int id;
	char user[32];
	long token;
	struct pair pair;
	union {
		int flags;
		char raw[12];
	}; /* anonymous: its members are the session's */
	unsigned bits : 3;
};

struct session session = {.id = 7, .user = "root", .token = 0x5eed};
typedef const volatile struct session csession;
static csession backup = {.id = 8};
static int grid[3][5];
long *scores[4];
long *calls_at; /* where worker's static "calls" is */

static __attribute__((noinline)) int helper(int x) {
	int y = x * 3;
	if (y > 10)
		y -= 4;
	else
		y += 9;
	return y + grid[1][2];
}

int __attribute__((noinline)) worker(int n) {
	static long calls;
	int sum = 0;
	calls += n;
	calls_at = &calls;
	for (int i = 0; i < n; i++) {
		sum += helper(i);
		session.token ^= sum;
	}
	return sum + (int)calls;
}

int main(int argc, char **argv) {
	int r = worker(argc + 3);
	if (argc > 1 && strcmp(argv[1], "addrs") == 0) {
		printf("session %p %zu\n", (void *)&session, sizeof session);
		printf("session.token %p %zu\n", (void *)&session.token, sizeof session.token);
		printf("session.pair.b %p %zu\n", (void *)&session.pair.b, sizeof session.pair.b);
		printf("session.raw %p %zu\n", (void *)&session.raw, sizeof session.raw);
		printf("backup %p %zu\n", (void *)&backup, sizeof backup);
		printf("grid %p %zu\n", (void *)&grid, sizeof grid);
		printf("scores %p %zu\n", (void *)&scores, sizeof scores);
		printf("worker::calls %p %zu\n", (void *)calls_at, sizeof *calls_at);
	}
	return r == 12345;
}
