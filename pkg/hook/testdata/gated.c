// Two threads call sized(0..99) and take() on each of four cells; a gate
// in front of sized and take lets only some of those calls stop.
#include <pthread.h>
#include <stdio.h>

long cells[4];

__attribute__((noinline)) long sized(long n) { return n * 3; }
__attribute__((noinline)) long take(long *p) { return *p + (p - cells); }

static void *run(void *arg) {
	long sum = (long)arg;
	for (long i = 0; i < 100; i++)
		sum += sized(i);
	for (int i = 0; i < 4; i++)
		sum += take(&cells[i]);
	return (void *)sum;
}

int main(void) {
	pthread_t t[2];
	void *r[2];
	for (long i = 0; i < 2; i++)
		pthread_create(&t[i], NULL, run, (void *)i);
	for (int i = 0; i < 2; i++)
		pthread_join(t[i], &r[i]);
	printf("%ld %ld\n", (long)r[0], (long)r[1]);
	return 0;
}
