/* getcontext() into a watched global, N times (argv[1]; 20 by default):
 * plain stores of the registers, an fnstenv of the x87 environment (a
 * store memtrap's emulator does not do), an stmxcsr, and the kernel's
 * write of the signal mask. setcontext then resumes from the last one
 * once: the saved context works, and the control word fnstenv stored is
 * printed. Meanwhile a thread adds 1 to `counter`, on the same page, 40
 * times per getcontext. Then an fxsave, an xsave and an xsave across two
 * pages, which memtrap's emulator does not do either, and what they
 * saved. It ignores SIGTRAP throughout, and says whether it still does. */
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <ucontext.h>

ucontext_t ctx;
volatile long counter;
/* An fxsave's image, then an xsave's of the x87 and SSE state, then one
 * that straddles two pages. */
unsigned char fx[512] __attribute__((aligned(16)));
unsigned char xs[1024] __attribute__((aligned(64)));
unsigned char two[8192] __attribute__((aligned(4096)));
static long rounds = 20;

static void *adder(void *arg)
{
	(void)arg;
	for (long i = 0; i < 40 * rounds; i++)
		counter = counter + 1;
	return NULL;
}

int main(int argc, char **argv)
{
	if (argc > 1)
		rounds = atol(argv[1]);
	/* Ignored, as a single-step's SIGTRAP would reset it to. */
	signal(SIGTRAP, SIG_IGN);
	pthread_t t;
	pthread_create(&t, NULL, adder, NULL);
	for (long i = 0; i < rounds; i++)
		getcontext(&ctx);
	static volatile int n;
	if (n++ == 0)
		setcontext(&ctx);
	pthread_join(t, NULL);
	__asm__ volatile("fxsave64 %0" : "=m"(fx));
	__asm__ volatile("xsave64 %0" : "=m"(xs) : "a"(3), "d"(0));
	__asm__ volatile("xsave64 (%0)" : : "c"(two + 4096 - 256), "a"(3), "d"(0) : "memory");
	struct sigaction sa;
	sigaction(SIGTRAP, NULL, &sa);
	printf("SIGTRAP ignored %d\n", sa.sa_handler == SIG_IGN);
	printf("resumed %d, fcw %#x, counter %ld, fxsave fcw %#x, xsave fcw %#x bv %#x, across %#x %#x\n", n,
	       ctx.__fpregs_mem.cwd, counter, fx[0] | fx[1] << 8, xs[0] | xs[1] << 8, xs[512],
	       two[4096 - 256] | two[4096 - 255] << 8, two[4096 + 256]);
	return 0;
}
