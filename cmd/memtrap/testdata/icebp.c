/* For the hw engine: the target's own ICEBP (int1) raises SIGTRAP with
 * TRAP_BRKPT, as a debug exception with DR6 empty does; the target's
 * handler must still see each. Writes `val` around each. */
#include <signal.h>
#include <stdio.h>
#include <string.h>

volatile long val;
static volatile int traps;

static void on_trap(int sig, siginfo_t *si, void *uc)
{
	(void)sig, (void)uc;
	if (si->si_code == 1) /* TRAP_BRKPT */
		traps++;
}

int main(void)
{
	struct sigaction sa;
	memset(&sa, 0, sizeof sa);
	sa.sa_sigaction = on_trap;
	sa.sa_flags = SA_SIGINFO;
	sigaction(SIGTRAP, &sa, NULL);
	for (int i = 1; i <= 3; i++) {
		val = i;
		__asm__ volatile(".byte 0xf1");
		val = 10 * i;
	}
	printf("traps=%d val=%ld\n", traps, val);
	return 0;
}
