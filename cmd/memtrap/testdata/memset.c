/* -O2 -fomit-frame-pointer: glibc's memset, called through the PLT from
 * clear_record, does the write. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

char buf[256];
int cleared;

__attribute__((noinline)) void clear_record(char *p, int c, size_t n)
{
	memset(p, c, n);
	cleared++; /* no tail call: clear_record keeps its frame */
}

__attribute__((noinline)) void process(size_t n)
{
	clear_record(buf, 'x', n);
	cleared++;
}

int main(int argc, char **argv)
{
	process(argc > 1 ? strtoul(argv[1], NULL, 0) : 200);
	printf("%c%c %d\n", buf[0], buf[199], cleared);
	return 0;
}
