/* For --when, --summary, --last, --max-writes and --on-hit: `val` is
 * written 110 times, each with a new value: 60 times by store() called
 * from parse_a (values 1..60), 40 by store() from parse_b (1001..1040), 10
 * by direct() itself (5001..5010); `flags` (1 byte) 8 times, 1 then each
 * next power of two. Prints both and exits 3; with "crash", dies of
 * SIGSEGV after printing. */
#include <stdio.h>
#include <string.h>

volatile long val;
volatile unsigned char flags;

__attribute__((noinline)) void store(volatile long *p, long v) { *p = v; }
__attribute__((noinline)) void parse_a(int i) { store(&val, i); }
__attribute__((noinline)) void parse_b(int i) { store(&val, 1000 + i); }
__attribute__((noinline)) void direct(int i) { val = 5000 + i; }

int main(int argc, char **argv)
{
	for (int i = 1; i <= 60; i++)
		parse_a(i);
	for (int i = 1; i <= 40; i++)
		parse_b(i);
	for (int i = 1; i <= 10; i++)
		direct(i);
	for (int i = 0; i < 8; i++)
		flags = (unsigned char)(1u << i);
	printf("val=%ld flags=%u\n", val, flags);
	fflush(stdout);
	if (argc > 1 && strcmp(argv[1], "crash") == 0) {
		volatile long *p = 0;
		*p = 1;
	}
	return 3;
}
