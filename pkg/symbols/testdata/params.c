/* Fixture for Table.Params: fill_record's parameters, read at a breakpoint
 * in it, must be the global's address and 100. Built at -O0 and -O2. */
#include <stdio.h>

long records[128];
volatile long sink_total;

__attribute__((noinline, noclone)) void sink(long v) { sink_total += v; }

__attribute__((noinline, noclone)) void fill_record(long *dst, int n)
{
	for (int i = 0; i < n; i++)
		dst[i] = (long)i * 3;
	sink(0);
	sink(1);
}

int main(int argc, char **argv)
{
	(void)argv;
	fill_record(records, 99 + argc);
	printf("%ld\n", records[99]);
	return 0;
}
