/* For the guardian tests: bumps `ticks` through bump() every argv[1] ms
 * (default 100), printing "tick N" after each, until its stdin closes; then
 * prints "done N", says whether bump's code is as it was at the start, and
 * exits with status 7. Prints "ready" once it runs. */
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

volatile long ticks;

__attribute__((noinline)) long bump(volatile long *p)
{
	*p += 1;
	return *p;
}

int main(int argc, char **argv)
{
	int ms = argc > 1 ? atoi(argv[1]) : 100;
	unsigned char code[16];
	memcpy(code, (void *)bump, sizeof code);
	printf("ready\n");
	fflush(stdout);
	for (;;) {
		struct pollfd p = {0, POLLIN, 0};
		int n = poll(&p, 1, ms);
		if (n > 0) {
			char c;
			if (read(0, &c, 1) <= 0)
				break;
		}
		printf("tick %ld\n", bump(&ticks));
		fflush(stdout);
	}
	printf("done %ld, code %s\n", ticks, memcmp(code, (void *)bump, sizeof code) ? "changed" : "intact");
	return 7;
}
