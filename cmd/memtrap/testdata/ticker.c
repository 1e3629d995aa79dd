/* For attach tests: prints "ready", then bumps `ticks` every 10 ms for
 * argv[1] iterations (default 200), printing each, then a final line; with
 * a second argument "abort", dies of SIGABRT instead of the final line. */
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

volatile long ticks;

int main(int argc, char **argv)
{
	long n = argc > 1 ? atol(argv[1]) : 200;
	struct timespec ts = {0, 10 * 1000 * 1000};
	printf("ready\n");
	fflush(stdout);
	for (long i = 0; i < n; i++) {
		ticks++;
		printf("tick %ld\n", ticks);
		fflush(stdout);
		nanosleep(&ts, NULL);
	}
	if (argc > 2)
		abort();
	printf("done %ld\n", ticks);
	return 0;
}
