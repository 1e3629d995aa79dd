/* For the guardian tests: bumps `ticks` through bump() every argv[1] ms
 * (default 100), printing "tick N" after each, until its stdin closes; then
 * prints "done N", says whether bump's code is as it was at the start, and
 * exits with status 7. Prints "ready" once it runs. With argv[2] "fork", the
 * first SIGUSR1 makes it fork: the child carries on (the same ticks, the same
 * stdin), the parent waits for it and exits with its status. */
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

volatile long ticks;
static volatile sig_atomic_t forkNow;

static void onUsr1(int sig)
{
	(void)sig;
	forkNow = 1;
}

__attribute__((noinline)) long bump(volatile long *p)
{
	*p += 1;
	return *p;
}

int main(int argc, char **argv)
{
	int ms = argc > 1 ? atoi(argv[1]) : 100;
	int forks = argc > 2 && strcmp(argv[2], "fork") == 0;
	if (forks) {
		struct sigaction sa = {0};
		sa.sa_handler = onUsr1;
		sigaction(SIGUSR1, &sa, NULL);
	}
	unsigned char code[16];
	memcpy(code, (void *)bump, sizeof code);
	printf("ready\n");
	fflush(stdout);
	for (;;) {
		struct pollfd p = {0, POLLIN, 0};
		int n = poll(&p, 1, ms);
		if (forkNow) {
			forkNow = 0;
			fflush(stdout);
			pid_t pid = fork();
			if (pid < 0)
				return 1;
			if (pid > 0) {
				int st;
				if (waitpid(pid, &st, 0) != pid)
					return 1;
				return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
			}
			continue;
		}
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
