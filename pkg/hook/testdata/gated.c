// Two threads call sized(0..99) and take() on each of four cells, guarded()
// on each cell and on NULL, and looped(11); a gate in front of them lets
// only some of those calls stop.
#include <pthread.h>
#include <stdio.h>

long cells[4];

__attribute__((noinline)) long sized(long n) { return n * 3; }
__attribute__((noinline)) long take(long *p) { return *p + (p - cells); }

// guarded(p): *p, or 0 for NULL. It begins as glibc's free does, behind
// an endbr64: test rdi, rdi; je (the gate's uprobe goes on the je, which
// the kernel runs without a single-step).
long guarded(long *p);
__asm__(".text\n.globl guarded\n.type guarded, @function\nguarded:\n"
	"endbr64\n test %rdi, %rdi\n je 1f\n mov (%rdi), %rax\n ret\n"
	"1: xor %eax, %eax\n ret\n.size guarded, .-guarded\n");

// looped(n): 7, after n turns of a loop whose branch lands on the je
// after the entry's test: its uprobe must stay at the entry, or each turn
// would look like another call.
long looped(long n);
__asm__(".text\n.globl looped\n.type looped, @function\nlooped:\n"
	"test %rdi, %rdi\n 1: je 2f\n sub $1, %rdi\n jmp 1b\n"
	"2: mov $7, %eax\n ret\n.size looped, .-looped\n");

static void *run(void *arg) {
	long sum = (long)arg;
	for (long i = 0; i < 100; i++)
		sum += sized(i);
	for (int i = 0; i < 4; i++)
		sum += take(&cells[i]);
	for (int i = 0; i < 4; i++)
		sum += guarded(&cells[i]);
	sum += guarded(NULL) + looped(11);
	return (void *)sum;
}

int main(void) {
	pthread_t t[2];
	void *r[2];
	for (long i = 0; i < 2; i++)
		pthread_create(&t[i], NULL, run, (void *)i);
	for (int i = 0; i < 2; i++)
		pthread_join(t[i], &r[i]);
	printf("%ld %ld\n", (long)r[0], (long)r[1]);
	return 0;
}
