/* A target for the agent installed by memtrap's code (install_test.go):
 * argv[1] rounds of two stores to `watched` (a page of its own), one
 * RIP-relative, one through a base and an index register; then prints the
 * last values and the nanoseconds a round took, and exits with status 7. */
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

volatile long watched[512] __attribute__((aligned(4096)));

int main(int argc, char **argv)
{
	long n = argc > 1 ? atol(argv[1]) : 1000;
	struct timespec t0, t1;
	clock_gettime(CLOCK_MONOTONIC, &t0);
	for (long i = 1; i <= n; i++) {
		watched[0] = i;
		watched[8 + (i & 7)] = 3 * i;
	}
	clock_gettime(CLOCK_MONOTONIC, &t1);
	double ns = ((t1.tv_sec - t0.tv_sec) * 1e9 + (t1.tv_nsec - t0.tv_nsec)) / n;
	printf("last %ld %ld\n", watched[0], watched[8 + (n & 7)]);
	fprintf(stderr, "%.0f ns per round\n", ns);
	return 7;
}
