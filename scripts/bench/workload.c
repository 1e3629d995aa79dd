/*
 * The benchmark's workload: `workload MODE N`.
 *   write N      N stores to the watched `counter` (each one is trapped)
 *   atomic N     N `lock xadd` increments of `counter`, as refcounts do
 *   neighbour N  N stores to `neighbour`, on the watched page, unwatched
 *   untouched N  N stores to `elsewhere`, on another page (never trapped)
 *   threads N    4 threads, N/4 stores each to their own slot of `slots`
 *   int3 N       N breakpoint traps (the ptrace floor, measured by the tracer)
 *   heap N [S [nowrite]]  N malloc(S)/free pairs (S default 40), each
 *                block's first word written once in between (not with
 *                nowrite)
 *   syscalls N [traced]  N getppid calls (no memory written); with traced,
 *                first waits for a tracer and 0.3 s more for it to arm.
 *                Prints the seconds the N calls took instead of a count.
 * Prints the number of stores it made to the watched region.
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

struct {
	volatile long counter;
	volatile long neighbour;
	volatile long slots[4];
} hot __attribute__((aligned(4096)));

volatile long elsewhere[512] __attribute__((aligned(4096)));

static long n;

/* traced says whether this process has a tracer (/proc/self/status). */
static int traced(void)
{
	char line[256];
	int pid = 0;
	FILE *f = fopen("/proc/self/status", "r");
	if (!f)
		return 0;
	while (fgets(line, sizeof line, f))
		if (sscanf(line, "TracerPid: %d", &pid) == 1)
			break;
	fclose(f);
	return pid != 0;
}

static double now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

static void *worker(void *arg)
{
	long id = (long)arg;
	for (long i = 0; i < n / 4; i++)
		hot.slots[id] = i;
	return NULL;
}

int main(int argc, char **argv)
{
	if (argc < 3)
		return 2;
	n = atol(argv[2]);
	const char *mode = argv[1];
	long watched = 0;
	if (!strcmp(mode, "write")) {
		for (long i = 0; i < n; i++)
			hot.counter = i;
		watched = n;
	} else if (!strcmp(mode, "atomic")) {
		long sum = 0;
		for (long i = 0; i < n; i++)
			sum += __atomic_fetch_add(&hot.counter, 1, __ATOMIC_SEQ_CST);
		watched = sum >= 0 ? n : -1;
	} else if (!strcmp(mode, "neighbour")) {
		for (long i = 0; i < n; i++)
			hot.neighbour = i;
	} else if (!strcmp(mode, "untouched")) {
		for (long i = 0; i < n; i++)
			elsewhere[i & 511] = i;
	} else if (!strcmp(mode, "threads")) {
		pthread_t t[4];
		for (long i = 0; i < 4; i++)
			pthread_create(&t[i], NULL, worker, (void *)i);
		for (int i = 0; i < 4; i++)
			pthread_join(t[i], NULL);
		watched = n / 4 * 4;
	} else if (!strcmp(mode, "heap")) {
		size_t size = argc > 3 ? (size_t)atol(argv[3]) : 40;
		int write = !(argc > 4 && !strcmp(argv[4], "nowrite"));
		for (long i = 0; i < n; i++) {
			volatile long *p = malloc(size);
			if (write)
				p[0] = i;
			free((void *)p);
		}
		watched = write ? n : 0;
	} else if (!strcmp(mode, "syscalls")) {
		if (argc > 3 && !strcmp(argv[3], "traced")) {
			const struct timespec ms = {0, 1000000}, arm = {0, 300000000};
			while (!traced())
				nanosleep(&ms, NULL);
			nanosleep(&arm, NULL);
		}
		double t0 = now();
		for (long i = 0; i < n; i++)
			syscall(SYS_getppid);
		printf("%.6f\n", now() - t0);
		return 0;
	} else if (!strcmp(mode, "int3")) {
		for (long i = 0; i < n; i++)
			__asm__ volatile("int3");
	} else {
		return 2;
	}
	printf("%ld\n", watched);
	return 0;
}
