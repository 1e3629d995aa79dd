/* Store scenarios for pagewatch tests, chosen by argv[1]. Built -no-pie so
 * the test can find `area` by its link-time address. */
#include <stdint.h>
#include <stdio.h>
#include <string.h>

/* Three pages, page-aligned: room to cross page boundaries. */
unsigned char area[3 * 4096] __attribute__((aligned(4096)));

int main(int argc, char **argv)
{
	const char *what = argc > 1 ? argv[1] : "";
	if (!strcmp(what, "straddle")) {
		/* One unaligned 8-byte store across the first page boundary. */
		volatile uint64_t *p = (volatile uint64_t *)(area + 4092);
		*p = 0x1122334455667788ULL;
	} else if (!strcmp(what, "repstos")) {
		/* One rep stosb over 10000 bytes, across two boundaries. */
		void *dst = area + 100;
		size_t n = 10000;
		__asm__ volatile("rep stosb" : "+D"(dst), "+c"(n) : "a"(0xab) : "memory");
	} else if (!strcmp(what, "mixed")) {
		/* 100 stores into the region, 100 next to it on the same page. */
		for (int i = 0; i < 100; i++) {
			((volatile unsigned char *)area)[64] = (unsigned char)i;
			((volatile unsigned char *)area)[2000] = (unsigned char)i;
		}
	} else if (!strcmp(what, "same")) {
		/* Stores of the value already there: still writes. */
		for (int i = 0; i < 5; i++)
			((volatile uint32_t *)area)[0] = 0;
	}
	printf("%s ok\n", what);
	return 0;
}
