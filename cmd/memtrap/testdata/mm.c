/* The target's own memory management over watched pages. Maps three
 * pages, prints their address and waits for a line (attach); then: a store
 * to page 0; page 1 made read-only and writable again, then stored to;
 * MADV_DONTNEED on page 0 (the kernel zeroes it); page 2 unmapped and a new
 * mapping put at its address and stored to (not watched: memtrap was not
 * asked to); page 1 made read-only for good. Then it prints "waiting" and
 * waits for another line (the test detaches and looks at the maps). */
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>

int main(void)
{
	char line[16];
	char *p = mmap(NULL, 3 * 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	printf("%p\n", (void *)p);
	fflush(stdout);
	if (!fgets(line, sizeof line, stdin))
		return 2;
	*(volatile long *)p = 1;
	mprotect(p + 4096, 4096, PROT_READ);
	mprotect(p + 4096, 4096, PROT_READ | PROT_WRITE);
	*(volatile long *)(p + 4096) = 2;
	madvise(p, 4096, MADV_DONTNEED);
	munmap(p + 8192, 4096);
	char *q = mmap(p + 8192, 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0);
	*(volatile long *)q = 3;
	mprotect(p + 4096, 4096, PROT_READ);
	printf("waiting %ld %ld %ld\n", *(long *)p, *(long *)(p + 4096), *(long *)q);
	fflush(stdout);
	if (!fgets(line, sizeof line, stdin))
		return 2;
	printf("done\n");
	return 0;
}
