/* Watched memory on the stack: signal frames the kernel pushes there, and
 * the handlers' own writes, must not change what the program does. Prints
 * the address of a local array, waits for a line, then writes the array
 * while SIGUSR1 (raise) and SIGALRM (setitimer) handlers run on the same
 * stack, and, with "alt", on a watched alternate stack too. With "switch",
 * the handlers run on another alternate stack for the first 10 rounds and
 * on the watched one after a sigaltstack call made while it is watched. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <unistd.h>

static volatile int usr1, alrm;
static char altstack[65536] __attribute__((aligned(4096)));
static char firststack[65536] __attribute__((aligned(4096)));

static void on_usr1(int sig)
{
	volatile char pad[64];
	pad[0] = (char)sig;
	usr1 += pad[0] == SIGUSR1;
}

static void on_alrm(int sig)
{
	(void)sig;
	alrm++;
}

int main(int argc, char **argv)
{
	volatile long local[8];
	char line[16];
	int change = argc > 1 && strcmp(argv[1], "switch") == 0;
	int alt = change || (argc > 1 && strcmp(argv[1], "alt") == 0);
	memset((void *)local, 0, sizeof local);
	struct sigaction sa = {0};
	sa.sa_handler = on_usr1;
	if (alt) {
		stack_t ss = {.ss_sp = change ? firststack : altstack, .ss_size = sizeof altstack};
		sigaltstack(&ss, NULL);
		sa.sa_flags = SA_ONSTACK;
	}
	sigaction(SIGUSR1, &sa, NULL);
	sa.sa_handler = on_alrm;
	sigaction(SIGALRM, &sa, NULL);
	printf("%p %p\n", (void *)local, (void *)(altstack + sizeof altstack - 4096));
	fflush(stdout);
	if (!fgets(line, sizeof line, stdin))
		return 2;
	struct itimerval it = {{0, 2000}, {0, 2000}};
	setitimer(ITIMER_REAL, &it, NULL);
	for (int i = 1; i <= 20; i++) {
		if (change && i == 11) {
			stack_t ss = {.ss_sp = altstack, .ss_size = sizeof altstack};
			sigaltstack(&ss, NULL);
		}
		local[i % 8] = i;
		raise(SIGUSR1);
		usleep(1000);
	}
	it.it_value.tv_usec = it.it_interval.tv_usec = 0;
	setitimer(ITIMER_REAL, &it, NULL);
	long sum = 0;
	for (int i = 0; i < 8; i++)
		sum += local[i];
	printf("sum %ld usr1 %d alrm>0 %d\n", sum, usr1, alrm > 0);
	return 0;
}
