/* Writes 10 times to `watched` and 1000 times to `neighbour`, which shares
 * its page (and its cache line): only the first 10 are memtrap's business. */
#include <stdio.h>

struct { long watched; long neighbour; } pair;

__attribute__((noinline)) void bump_neighbour(void) { pair.neighbour++; }
__attribute__((noinline)) void set_watched(long v) { pair.watched = v; }

int main(void)
{
	for (int i = 0; i < 1000; i++) {
		bump_neighbour();
		if (i % 100 == 0)
			set_watched(i);
	}
	printf("watched=%ld neighbour=%ld\n", pair.watched, pair.neighbour);
	return 0;
}
