/* Stores from a function that runs at the very top of a stack with nothing
 * readable after it (a PROT_NONE page): whatever copies the stack at a
 * store must stop at its end. onedge runs on a makecontext stack; it and
 * main write `counter` 1..100 between them. */
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <ucontext.h>

volatile long counter;

__attribute__((noinline)) static void onedge(void)
{
	for (int i = 0; i < 50; i++)
		counter = counter + 1;
}

int main(void)
{
	ucontext_t back, edge; /* off counter's page: getcontext stores x87 state */
	char *m = mmap(NULL, 3 * 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (m == MAP_FAILED || mprotect(m + 2 * 4096, 4096, PROT_NONE) != 0)
		return 1;
	getcontext(&edge);
	edge.uc_stack.ss_sp = m;
	edge.uc_stack.ss_size = 2 * 4096;
	edge.uc_link = &back;
	makecontext(&edge, onedge, 0);
	swapcontext(&back, &edge);
	for (int i = 0; i < 50; i++)
		counter = counter + 1;
	printf("counter %ld\n", counter);
	return 0;
}
