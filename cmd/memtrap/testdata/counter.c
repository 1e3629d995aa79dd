/* Counts a watched counter from 1 to 100, one store per step, and a big
 * buffer's words too; exits with status 7 to check it passes through. */
#include <stdio.h>

volatile unsigned long counter;
unsigned long big[64];

__attribute__((noinline)) void step(unsigned long v) { counter = v; }

int main(void)
{
	for (unsigned long v = 1; v <= 100; v++)
		step(v);
	for (int i = 0; i < 64; i++)
		big[i] = 1000 + i;
	printf("counter=%lu\n", counter);
	return 7;
}
