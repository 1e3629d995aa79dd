/* One thread stores to a watched page and madvise(MADV_DONTNEED)s it, 200
 * times; another adds 1 with lock xadd to a watched word on the next page
 * meanwhile, 2000 times (a store the fast engine's agent hands to
 * memtrap, which takes the agent's lock for it while the madvise may hold
 * it). */
#include <pthread.h>
#include <stdio.h>
#include <sys/mman.h>

unsigned char buf[2 * 4096] __attribute__((aligned(4096)));

static long seen;

static void *adder(void *arg)
{
	(void)arg;
	long s = 0;
	for (int i = 0; i < 2000; i++)
		s += __atomic_fetch_add((long *)&buf[4096 + 8], 1, __ATOMIC_SEQ_CST);
	seen = s; /* the old values used: a lock xadd, not a lock add */
	return NULL;
}

int main(void)
{
	pthread_t t;
	pthread_create(&t, NULL, adder, NULL);
	int bad = 0;
	for (int i = 1; i <= 200; i++) {
		buf[0] = (unsigned char)i;
		if (madvise(buf, 4096, MADV_DONTNEED) != 0 || buf[0] != 0)
			bad++;
	}
	pthread_join(t, NULL);
	printf("counter %ld bad %d seen %ld\n", *(long *)&buf[4096 + 8], bad, seen);
	return 0;
}
