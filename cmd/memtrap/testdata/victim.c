/* For failure injection while attaching: catches SIGSEGV with a handler of
 * its own, ignores SIGTRAP, blocks SIGUSR2; prints "ready", then every
 * 5 ms bumps `ticks` and allocates and frees a 40-byte block, printing
 * "tick N", argv[1] times (default 400); then "done N". */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <time.h>

volatile long ticks;

static void on_segv(int sig)
{
	(void)sig;
	_exit(99);
}

__attribute__((noinline)) static void stamp(long *p, long v) { *p = v; }

int main(int argc, char **argv)
{
	long n = argc > 1 ? atol(argv[1]) : 400;
	struct sigaction sa;
	memset(&sa, 0, sizeof sa);
	sa.sa_handler = on_segv;
	sigaction(SIGSEGV, &sa, NULL);
	signal(SIGTRAP, SIG_IGN);
	sigset_t set;
	sigemptyset(&set);
	sigaddset(&set, SIGUSR2);
	sigprocmask(SIG_BLOCK, &set, NULL);
	struct timespec ts = {0, 5 * 1000 * 1000};
	printf("ready\n");
	fflush(stdout);
	for (long i = 0; i < n; i++) {
		ticks++;
		long *b = malloc(40);
		stamp(b, ticks);
		free(b);
		printf("tick %ld\n", ticks);
		fflush(stdout);
		nanosleep(&ts, NULL);
	}
	printf("done %ld\n", ticks);
	return 0;
}
