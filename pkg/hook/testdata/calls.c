// Functions a test hooks: twice (recursive now and then, from two
// threads) and ripfirst, whose first instruction reads RIP-relative memory
// and so cannot run out of line.
#include <pthread.h>
#include <stdio.h>

volatile char flag = 1;

__attribute__((noinline)) long twice(long x) {
	if (x > 0 && x % 10 == 0)
		return twice(x - 1) + 2;
	return 2 * x;
}

long ripfirst(long x);
__asm__(".text\n.globl ripfirst\n.type ripfirst,@function\nripfirst:\n"
	"\tcmpb $0, flag(%rip)\n\tje 1f\n\tlea 1(%rdi), %rax\n\tret\n"
	"1:\tlea 2(%rdi), %rax\n\tret\n.size ripfirst, .-ripfirst\n");

static void *worker(void *arg) {
	long base = (long)arg, s = 0;
	for (long i = 0; i < 50; i++)
		s += twice(base + i) + ripfirst(i);
	return (void *)s;
}

int main(void) {
	pthread_t t[2];
	for (long i = 0; i < 2; i++)
		pthread_create(&t[i], NULL, worker, (void *)(i * 1000));
	for (int i = 0; i < 2; i++) {
		void *s;
		pthread_join(t[i], &s);
		printf("sum %d: %ld\n", i, (long)s);
	}
	return 0;
}
