/* The fast engine against the page engine (fast_test.go): stores the
 * agent completes from a recipe (plain MOVs), stores memtrap completes
 * from the signal frame (lock xadd, rep stosb, vector stores), stores to
 * unwatched data on a watched page, the target's own SIGSEGV handler set
 * and read back after memtrap armed (and a fault of its own that it
 * catches), and a forked child writing the watched memory (its own copy:
 * not reported). Its output is the same however it runs. */
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

struct {
	long slots[4];
	unsigned char buf[64];
	long neighbor; /* same page, not watched (--len 96) */
} watched __attribute__((aligned(128)));

static sigjmp_buf jb;
static volatile int caught;
static long rounds;

static void onsegv(int sig)
{
	(void)sig;
	caught++;
	siglongjmp(jb, 1);
}

__attribute__((noinline)) static void plain(long *p, long v) { *(volatile long *)p = v; }

static void *worker(void *arg)
{
	long i = (long)arg;
	for (long n = 0; n < rounds; n++) {
		plain(&watched.slots[i], watched.slots[i] + 1);
		__atomic_fetch_add(&watched.slots[i], 1, __ATOMIC_SEQ_CST);
		__atomic_fetch_add(&watched.neighbor, 1, __ATOMIC_RELAXED);
	}
	return 0;
}

__attribute__((noinline)) static void fill(unsigned char *p, int c, unsigned long n)
{
	__asm__ volatile("rep stosb" : "+D"(p), "+c"(n) : "a"(c) : "memory");
}

int main(int argc, char **argv)
{
	rounds = argc > 1 ? atol(argv[1]) : 100;
	struct sigaction sa = {0}, back;
	sa.sa_handler = onsegv;
	sigaction(SIGSEGV, &sa, 0);
	sigaction(SIGSEGV, 0, &back);
	printf("own handler read back: %s\n", back.sa_handler == onsegv ? "yes" : "no");
	if (sigsetjmp(jb, 1) == 0)
		*(volatile int *)8 = 1;
	printf("own fault caught: %d\n", caught);
	pthread_t t[4];
	for (long i = 0; i < 4; i++)
		pthread_create(&t[i], 0, worker, (void *)i);
	for (int i = 0; i < 4; i++)
		pthread_join(t[i], 0);
	fill(watched.buf, 0x11, 40);
	memset(watched.buf + 8, 0x22, 32);
	unsigned char src[16];
	for (int i = 0; i < 16; i++)
		src[i] = (unsigned char)(0x30 + i);
	__builtin_memcpy(watched.buf + 48, src, 16);
	fflush(stdout);
	pid_t child = fork();
	if (child == 0) {
		plain(&watched.slots[0], 999);
		_exit(watched.slots[0] == 999 ? 7 : 1);
	}
	int st;
	waitpid(child, &st, 0);
	printf("child: %d, slots %ld %ld %ld %ld, neighbor %ld, buf %02x %02x %02x\n", WEXITSTATUS(st), watched.slots[0],
	       watched.slots[1], watched.slots[2], watched.slots[3], watched.neighbor, watched.buf[0], watched.buf[20], watched.buf[63]);
	return 5;
}
