/* The target maps a new page over a watched one (fast_test.go): the store
 * before is reported, the region said unmapped, the store after is not. */
#include <stdio.h>
#include <sys/mman.h>
long counter __attribute__((aligned(4096)));
long pad[600];
int main(void) {
	counter = 1;
	void *r = mmap(&counter, 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0);
	counter = 2; /* a new page at the same place: not watched */
	printf("mmap %s counter %ld\n", r == (void *)&counter ? "ok" : "failed", counter);
	return 0;
}
