/* 4 threads, each writing its own slot of one watched array N times
 * (argv[1], default 2000); prints the slots' sum. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>

volatile long slots[4];
static long n = 2000;

static void *worker(void *arg)
{
	long id = (long)arg;
	for (long i = 1; i <= n; i++)
		slots[id] = i;
	return NULL;
}

int main(int argc, char **argv)
{
	if (argc > 1)
		n = atol(argv[1]);
	pthread_t t[4];
	for (long i = 0; i < 4; i++)
		pthread_create(&t[i], NULL, worker, (void *)i);
	for (int i = 0; i < 4; i++)
		pthread_join(t[i], NULL);
	printf("sum=%ld\n", slots[0] + slots[1] + slots[2] + slots[3]);
	return 0;
}
