/* The in-process floor of a trapped write (`make bench`): what a SIGSEGV
 * handler inside the process pays to complete a store to a write-protected
 * page, as an in-target engine would, with no tracer at all. `inproc N`
 * makes N 8-byte stores to a protected page; each faults, and the handler
 * emulates it: the store is known (mov %rax,(%rdi), 3 bytes), its value is
 * taken from the saved registers, written through /proc/self/mem (which
 * writes past the protection), and the handler returns past it. Prints
 * the number of stores the handler completed; exits 1 if the memory does
 * not hold the last value stored. */
#define _GNU_SOURCE
#include <fcntl.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <ucontext.h>
#include <unistd.h>

static int mem;
static volatile long done;

static void on_segv(int sig, siginfo_t *si, void *ctx)
{
	ucontext_t *uc = ctx;
	greg_t *g = uc->uc_mcontext.gregs;
	const unsigned char *ip = (const unsigned char *)g[REG_RIP];
	(void)sig;
	if (si->si_code != SEGV_ACCERR || ip[0] != 0x48 || ip[1] != 0x89 || ip[2] != 0x07)
		abort(); /* not the benchmark's store */
	uint64_t v = (uint64_t)g[REG_RAX];
	if (pwrite(mem, &v, sizeof v, (off_t)g[REG_RDI]) != sizeof v)
		abort();
	g[REG_RIP] += 3;
	done++;
}

int main(int argc, char **argv)
{
	long n = argc > 1 ? atol(argv[1]) : 1000;
	long page = sysconf(_SC_PAGESIZE);
	long *p = mmap(NULL, page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (p == MAP_FAILED)
		return 1;
	p[0] = -1; /* the page exists before it is protected */
	mem = open("/proc/self/mem", O_RDWR | O_CLOEXEC);
	if (mem < 0)
		return 1;
	struct sigaction sa;
	memset(&sa, 0, sizeof sa);
	sa.sa_sigaction = on_segv;
	sa.sa_flags = SA_SIGINFO;
	sigaction(SIGSEGV, &sa, NULL);
	if (mprotect(p, page, PROT_READ) != 0)
		return 1;
	for (long i = 0; i < n; i++)
		__asm__ volatile(".byte 0x48, 0x89, 0x07" /* mov %rax,(%rdi) */
				 : : "a"(i), "D"(p) : "memory");
	printf("%ld\n", done);
	return n > 0 && p[0] != n - 1;
}
