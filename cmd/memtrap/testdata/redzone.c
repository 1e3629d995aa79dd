/* For parameters kept below the stack pointer: leaf() (a leaf function,
 * -O0) keeps v in its red zone, below rsp. It is called at 300 stack
 * depths, so that rsp takes every 16-byte offset in a page, and v lies in
 * the page below rsp's at some of them. Writes `val` = 1..300. */
#include <stdio.h>

volatile long val;

__attribute__((noinline)) void leaf(long v) { val = v; }

__attribute__((noinline)) void down(int n, long v)
{
	volatile char pad[8];
	pad[0] = 0;
	if (n)
		down(n - 1, v);
	else
		leaf(v);
}

int main(void)
{
	for (int d = 0; d < 300; d++)
		down(d, d + 1);
	printf("val=%ld\n", val);
	return 0;
}
