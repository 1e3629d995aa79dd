/* sigsetjmp/siglongjmp out of a SIGSEGV handler, with the jmp_buf on the
 * watched page: rt_sigprocmask writes the saved mask there (a kernel write),
 * and the jmp_buf stores trap while SIGSEGV is blocked in the handler,
 * which makes the kernel reset the handler (force_sig_info). */
#include <setjmp.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>
volatile long value;
static sigjmp_buf env;
static char *guard;
static void on_segv(int sig, siginfo_t *si, void *uc)
{
	(void)sig;
	(void)si;
	(void)uc;
	siglongjmp(env, 1);
}
int main(void)
{
	struct sigaction sa;
	memset(&sa, 0, sizeof sa);
	sa.sa_sigaction = on_segv;
	sa.sa_flags = SA_SIGINFO;
	sigaction(SIGSEGV, &sa, NULL);
	guard = mmap(NULL, 4096, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	int caught = 0;
	for (int i = 0; i < 3; i++) {
		if (sigsetjmp(env, 1) == 0)
			*(volatile long *)(guard + 8) = i;
		else
			caught++;
		sigset_t cur;
		sigprocmask(SIG_BLOCK, NULL, &cur);
		printf("iter %d: segv blocked %d, mask_was_saved %d\n", i, sigismember(&cur, SIGSEGV), env[0].__mask_was_saved);
		fflush(stdout);
	}
	printf("caught %d\n", caught);
	return 0;
}
