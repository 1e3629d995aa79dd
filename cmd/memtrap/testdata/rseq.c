/* Prints the address of its rseq area (glibc registers one per thread in
 * its TCB, which the kernel writes at every preemption), waits for a line,
 * then gets preempted and migrated a lot. */
#define _GNU_SOURCE
#include <stdio.h>
#include <sched.h>
#include <unistd.h>
#include <time.h>
__thread volatile long tv;
extern const int __rseq_offset;
int main(void) {
	char line[8];
	printf("%p %p\n", (void*)&tv, (void*)((char*)__builtin_thread_pointer() + __rseq_offset));
	fflush(stdout);
	fgets(line, sizeof line, stdin);
	for (int i = 0; i < 200; i++) {
		tv = i;
		sched_yield();
		usleep(1000);
		int c = sched_getcpu();
		(void)c;
	}
	printf("done %ld cpu ok\n", tv);
	return 0;
}
