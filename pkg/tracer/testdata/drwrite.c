/* Prints the address of a variable, stops at an int3 (so the tracer can
 * watch it), then stores to it 5 times. */
#include <stdio.h>

volatile long watched;

int main(void)
{
	printf("%p\n", (void *)&watched);
	fflush(stdout);
	__asm__ volatile("int3");
	for (long i = 1; i <= 5; i++)
		watched = i;
	return 0;
}
