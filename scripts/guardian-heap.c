/* scripts/guardian-heap's target: 3,000,000 malloc(40)/free pairs, a
 * 50 us sleep every 50, each block's first word written; prints "ready",
 * then "done SUM" at the end. Its atexit handler prints how many pairs it
 * made, to stderr, so that an early exit shows. */
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

static volatile long iter;

static void bye(void) { fprintf(stderr, "pairs %ld\n", iter); }

int main(void)
{
	long sum = 0;
	atexit(bye);
	printf("ready\n");
	fflush(stdout);
	for (iter = 0; iter < 3000000; iter++) {
		long *p = malloc(40);
		p[0] = iter;
		sum += p[0];
		free(p);
		if (iter % 50 == 0)
			usleep(50);
	}
	printf("done %ld\n", sum);
	return 0;
}
