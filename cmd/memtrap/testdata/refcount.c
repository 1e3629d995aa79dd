/* 4 threads share one refcount, as reference-counted objects do: each
 * takes and drops a reference N times (lock xadd / lock add / lock sub),
 * and bumps a generation number with a compare-and-swap loop; at its end
 * it swaps its number into last_worker. Prints the final values. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>

long refcount = 1;
long generation;
long last_worker;
static long n = 500;

static void *worker(void *arg)
{
	for (long i = 0; i < n; i++) {
		if (__atomic_fetch_add(&refcount, 1, __ATOMIC_SEQ_CST) < 1) /* lock xadd */
			abort();
		__atomic_sub_fetch(&refcount, 1, __ATOMIC_ACQ_REL); /* lock sub */
		long g = __atomic_load_n(&generation, __ATOMIC_RELAXED);
		while (!__atomic_compare_exchange_n(&generation, &g, g + 1, 0, __ATOMIC_SEQ_CST, __ATOMIC_RELAXED))
			;                                              /* lock cmpxchg */
	}
	__atomic_exchange_n(&last_worker, (long)arg, __ATOMIC_SEQ_CST); /* xchg */
	return NULL;
}

int main(int argc, char **argv)
{
	if (argc > 1)
		n = atol(argv[1]);
	pthread_t t[4];
	for (long i = 0; i < 4; i++)
		pthread_create(&t[i], NULL, worker, (void *)(i + 1));
	for (int i = 0; i < 4; i++)
		pthread_join(t[i], NULL);
	printf("refcount=%ld generation=%ld last_worker>0 %d\n", refcount, generation, last_worker > 0);
	return 0;
}
