/* Ignores SIGTRAP, makes memtrap trap (a store it single-steps: a shift
 * of the watched word; and a malloc, which --heap hooks), then raises
 * SIGTRAP: natively ignored, so under memtrap too. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>

volatile long watched = 1;

int main(void)
{
	signal(SIGTRAP, SIG_IGN);
	for (int i = 0; i < 3; i++)
		__asm__ volatile("shlq $1, %0" : "+m"(watched));
	long *p = malloc(40);
	p[0] = watched;
	raise(SIGTRAP);
	printf("survived %ld\n", p[0]);
	free(p);
	return 0;
}
