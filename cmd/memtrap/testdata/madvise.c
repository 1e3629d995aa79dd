/* madvise(MADV_DONTNEED) over two of three watched pages, after a store
 * to each: the kernel zeroes them (a write memtrap reports, by madvise);
 * then one over an unwatched page next to them (nothing to report), and a
 * store after. */
#include <stdio.h>
#include <sys/mman.h>

unsigned char buf[3 * 4096] __attribute__((aligned(4096)));
unsigned char other[4096] __attribute__((aligned(4096)));

int main(void)
{
	buf[8] = 1;
	buf[4096 + 16] = 2;
	buf[8192 + 32] = 4;
	other[0] = 5;
	int r = madvise(buf, 2 * 4096, MADV_DONTNEED);
	int r2 = madvise(other, 4096, MADV_DONTNEED);
	buf[24] = 3;
	printf("madvise %d %d: %d %d %d %d %d\n", r, r2, buf[8], buf[4096 + 16], buf[8192 + 32], buf[24], other[0]);
	return 0;
}
