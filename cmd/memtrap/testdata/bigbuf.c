/* A watched buffer of PAGES pages (256 by default; fast_test.go): a byte
 * stored on each, and an 8-byte store straddling each boundary between
 * two of them. */
#include <stdio.h>
#include <string.h>

#ifndef PAGES
#define PAGES 256
#endif

unsigned char big[PAGES * 4096] __attribute__((aligned(4096)));

__attribute__((noinline)) static void put8(unsigned char *p, unsigned long v) { memcpy(p, &v, 8); }

int main(void)
{
	for (int i = 0; i < PAGES; i++)
		big[i * 4096 + i % 4096] = (unsigned char)(i + 1);
	for (int i = 1; i < PAGES; i++)
		put8(&big[i * 4096 - 4], 0x0101010101010101UL * (unsigned long)i);
	unsigned long sum = 0;
	for (int i = 0; i < (int)sizeof big; i++)
		sum += big[i];
	printf("sum %lu\n", sum);
	return 0;
}
