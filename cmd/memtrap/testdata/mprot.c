/* The target's own mprotect of a watched page (fast_test.go): read-only,
 * a store that faults into its own handler; writable again, a store that is
 * reported. */
#include <setjmp.h>
#include <signal.h>
#include <stdio.h>
#include <sys/mman.h>
#include <unistd.h>
long counter __attribute__((aligned(4096)));
long pad[600];
static sigjmp_buf jb;
static void onsegv(int s) { (void)s; siglongjmp(jb, 1); }
int main(void) {
	signal(SIGSEGV, onsegv);
	counter = 1;
	mprotect(&counter, 4096, PROT_READ);
	int faulted = 0;
	if (sigsetjmp(jb, 1) == 0) counter = 2; else faulted = 1;
	mprotect(&counter, 4096, PROT_READ | PROT_WRITE);
	counter = 3;
	printf("faulted %d counter %ld\n", faulted, counter);
	return 0;
}
