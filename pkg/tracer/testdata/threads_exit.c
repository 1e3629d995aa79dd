/* Starts 3 threads that each bump a counter, then exits with status 42. */
#include <pthread.h>
#include <stdio.h>

static long counters[3];

static void *work(void *arg)
{
	long *c = arg;
	for (int i = 0; i < 1000; i++)
		(*c)++;
	return NULL;
}

int main(void)
{
	pthread_t t[3];
	for (int i = 0; i < 3; i++)
		pthread_create(&t[i], NULL, work, &counters[i]);
	for (int i = 0; i < 3; i++)
		pthread_join(t[i], NULL);
	printf("%ld\n", counters[0] + counters[1] + counters[2]);
	return 42;
}
