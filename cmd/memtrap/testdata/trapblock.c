/* A SIGTRAP handler must survive memtrap's own traps (debug registers,
 * single-steps) taken while the thread blocks SIGTRAP: the kernel resets
 * the handler of a blocked signal it forces. With the argument "wait", it
 * first prints "ready" and waits for a line on stdin (to be attached). */
#include <signal.h>
#include <stdio.h>

volatile long value;
static volatile int caught;

static void on_trap(int sig)
{
	(void)sig;
	caught++;
}

int main(int argc, char **argv)
{
	if (argc > 1) {
		char line[16];
		printf("ready\n");
		fflush(stdout);
		if (!fgets(line, sizeof line, stdin))
			return 1;
	}
	signal(SIGTRAP, on_trap);
	sigset_t s, old;
	sigemptyset(&s);
	sigaddset(&s, SIGTRAP);
	for (int i = 1; i <= 3; i++) {
		sigprocmask(SIG_BLOCK, &s, &old);
		value = i;
		sigprocmask(SIG_SETMASK, &old, NULL);
		raise(SIGTRAP);
	}
	sigprocmask(SIG_BLOCK, &s, &old);
	printf("value %ld, handler ran %d times, SIGTRAP %s\n", value, caught,
	       sigismember(&old, SIGTRAP) ? "blocked" : "unblocked");
	return 0;
}
