/* The target's own signals must reach it as without memtrap, also while
 * memtrap completes trapped writes: a SIGSEGV handler for its own guard
 * page (siglongjmp), a 1 ms SIGALRM timer, SIGUSR1 sent to itself, all
 * while it stores to the watched `value` N times (argv[1], default 20000). */
#include <setjmp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/time.h>

/* value has its page to itself: the jmp_buf below must not share it, see
 * the note on sigsetjmp in README's limits. */
volatile long value __attribute__((aligned(4096)));
static char pad[4096] __attribute__((used));
static volatile sig_atomic_t ticks, usr1;
static sigjmp_buf env;
static char *guard;

static void on_segv(int sig, siginfo_t *si, void *uc)
{
	(void)sig;
	(void)uc;
	if ((char *)si->si_addr == guard + 8)
		siglongjmp(env, 1);
	_exit(99);
}
static void on_alarm(int sig) { (void)sig; ticks++; }
static void on_usr1(int sig) { (void)sig; usr1++; value = -1; }

int main(int argc, char **argv)
{
	long n = argc > 1 ? atol(argv[1]) : 20000;
	struct sigaction sa;
	memset(&sa, 0, sizeof sa);
	sa.sa_sigaction = on_segv;
	sa.sa_flags = SA_SIGINFO;
	sigaction(SIGSEGV, &sa, NULL);
	signal(SIGALRM, on_alarm);
	signal(SIGUSR1, on_usr1);
	guard = mmap(NULL, 4096, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	int caught = 0;
	for (int i = 0; i < 3; i++) {
		if (sigsetjmp(env, 1) == 0)
			*(volatile long *)(guard + 8) = i; /* faults: our own guard page */
		else
			caught++;
	}
	struct itimerval it = {{0, 1000}, {0, 1000}};
	setitimer(ITIMER_REAL, &it, NULL);
	for (long i = 1; i <= n; i++) {
		if (i % (n / 5) == 0)
			raise(SIGUSR1); /* its handler stores -1 */
		value = i;
	}
	struct itimerval off = {{0, 0}, {0, 0}};
	setitimer(ITIMER_REAL, &off, NULL);
	/* ticks depends on speed; only its handler's effect on the rest matters */
	printf("guard faults caught %d, usr1 %d, value %ld\n", caught, (int)usr1, value);
	return 0;
}
