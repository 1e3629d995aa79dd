// Heap blocks for --heap tests; the mode is argv[1].
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/wait.h>

__attribute__((noinline)) void stamp(long *p, long v) { *p = v; }

__attribute__((noinline)) void overflow(volatile char *p, int n) {
	for (int i = 0; i < n; i++)
		p[i] = 'A';
}

__attribute__((noinline)) long *alloc_a(size_t n) { return malloc(n); }
__attribute__((noinline)) long *alloc_b(size_t n) { return malloc(n); }
__attribute__((noinline)) long *grow(long *p) { return reallocarray(p, 6, 8); }
__attribute__((noinline)) void release(long *p) { free(p); }

static void on_usr1(int sig) { (void)sig; write(1, "usr1\n", 5); }

static volatile char *neighbour;
static volatile int pestered;
static void on_pester(int sig) {
	(void)sig;
	neighbour[0]++;
	pestered = 1;
}

static volatile int usr2;
static void on_usr2(int sig) { (void)sig; usr2++; }

struct pester {
	pthread_t to;
	int stop;
};

static void *pester(void *arg) {
	struct pester *pe = arg;
	while (!__atomic_load_n(&pe->stop, __ATOMIC_SEQ_CST)) {
		pthread_kill(pe->to, SIGUSR2);
		for (volatile int i = 0; i < 2000; i++)
			;
	}
	return NULL;
}

static void *worker(void *arg) {
	long id = (long)arg;
	long *blocks[50];
	for (int i = 0; i < 50; i++) {
		blocks[i] = malloc(40);
		stamp(blocks[i], id * 1000 + i);
	}
	for (int i = 0; i < 50; i++)
		free(blocks[i]);
	return NULL;
}

// slot_kept calls malloc(40) and says whether the stack slot its return
// address was pushed to still holds it after the return, as it does
// natively: nothing memtrap puts there (a trampoline's address) is left.
__attribute__((noinline)) int slot_kept(void) {
	void *p, *ra, *slot;
	__asm__ volatile(
		"mov %%rsp, %%rbx\n\t"
		"sub $256, %%rsp\n\t"
		"and $-16, %%rsp\n\t"
		"mov $40, %%edi\n\t"
		"call malloc@PLT\n"
		"1:\n\t"
		"mov -8(%%rsp), %2\n\t"
		"lea 1b(%%rip), %1\n\t"
		"mov %%rbx, %%rsp\n\t"
		"mov %%rax, %0\n\t"
		: "=r"(p), "=r"(ra), "=r"(slot)
		:
		: "rax", "rbx", "rcx", "rdx", "rsi", "rdi", "r8", "r9", "r10", "r11", "memory", "cc");
	stamp(p, 9);
	free(p);
	return ra == slot;
}

int main(int argc, char **argv) {
	const char *mode = argc > 1 ? argv[1] : "";
	if (!strcmp(mode, "overflow")) {
		// a's 24 bytes, the next chunk's size field, then b: a write of
		// 40 bytes from a runs over b's first 8.
		char *a = malloc(24);
		long *b = malloc(24);
		stamp(b, 0x11);
		overflow(a, 40);
		printf("b=%lx\n", (unsigned long)*b);
		// Not freed: the allocator would abort on b's stomped header.
	} else if (!strcmp(mode, "uaf")) {
		long *a = malloc(40);
		stamp(a, 1);
		free(a);
		stamp(a + 2, 42); // use after free
		long *b = malloc(40); // the same chunk again: a's watch ends
		stamp(b, 5);
		printf("same=%d\n", a == b);
		free(b);
	} else if (!strcmp(mode, "realloc")) {
		long *c = calloc(5, 8);
		void *guard = malloc(100); // after c: c cannot grow in place
		stamp(c + 1, 7);
		long *r = realloc(c, 3000);
		stamp(r + 100, 8);
		void *m = NULL;
		if (posix_memalign(&m, 64, 40) != 0)
			return 1;
		stamp(m, 9);
		printf("moved=%d aligned=%d\n", r != c, ((unsigned long)m & 63) == 0);
		free(r);
		free(m);
		free(guard);
	} else if (!strcmp(mode, "select")) {
		// 10 blocks from alloc_a, of 32, 36, ... 68 bytes, then 10 of
		// 40 from alloc_b; each written once with its number.
		for (long i = 0; i < 10; i++)
			stamp(alloc_a(32 + 4 * i), i);
		for (long i = 10; i < 20; i++)
			stamp(alloc_b(40), i);
		printf("select done\n");
	} else if (!strcmp(mode, "loop")) {
		// For attach: a block a round, written and freed, until told.
		printf("ready\n");
		fflush(stdout);
		for (long i = 0; i < 400; i++) {
			long *p = malloc(40);
			stamp(p, i);
			usleep(5000);
			free(p);
		}
		printf("loop done\n");
	} else if (!strcmp(mode, "fork") || !strcmp(mode, "forkexec")) {
		long *a = malloc(40);
		stamp(a, 1);
		pid_t pid = fork();
		if (pid == 0) {
			if (!strcmp(mode, "forkexec")) {
				execl("/proc/self/exe", argv[0], "uaf", (char *)NULL);
				_exit(127);
			}
			stamp(a, 2); // the child's copy
			long *b = malloc(40);
			stamp(b, 3);
			free(b);
			_exit(0);
		}
		int st;
		waitpid(pid, &st, 0);
		stamp(a, 4);
		printf("child %d\n", WEXITSTATUS(st));
		free(a);
	} else if (!strcmp(mode, "forkrealloc")) {
		// Parent and child both grow a block with reallocarray, which
		// glibc tail-calls realloc with: with a gate in each process,
		// the other's uprobe session took each call's return address
		// for the kernel's trampoline, and the tail call's uprobe then
		// dropped the kernel's record of it: SIGILL at the return.
		long *a = malloc(40);
		stamp(a, 1);
		pid_t pid = fork();
		long *g = grow(a);
		stamp(g, pid == 0 ? 2 : 3);
		release(g);
		if (pid == 0)
			_exit(0);
		int st;
		waitpid(pid, &st, 0);
		printf("child %d %d\n", WIFSIGNALED(st) ? WTERMSIG(st) : 0, WIFEXITED(st) ? WEXITSTATUS(st) : -1);
	} else if (!strcmp(mode, "exec")) {
		// A block, then the process runs itself anew (mode uaf).
		long *a = malloc(40);
		stamp(a, 1);
		free(a);
		fflush(stdout);
		execl("/proc/self/exe", argv[0], "uaf", (char *)NULL);
		return 127;
	} else if (!strcmp(mode, "slot")) {
		printf("slot=%d\n", slot_kept());
	} else if (!strcmp(mode, "threads")) {
		pthread_t t[4];
		for (long i = 0; i < 4; i++)
			pthread_create(&t[i], NULL, worker, (void *)i);
		for (int i = 0; i < 4; i++)
			pthread_join(t[i], NULL);
		printf("threads done\n");
	} else if (!strcmp(mode, "sigblock")) {
		// Every signal blocked while blocks come and go, one of the
		// program's own pending meanwhile, delivered at the unblock.
		sigset_t all;
		sigfillset(&all);
		signal(SIGUSR1, on_usr1);
		sigprocmask(SIG_BLOCK, &all, NULL);
		for (long i = 1; i <= 3; i++) {
			long *p = malloc(40);
			stamp(p, i);
			free(p);
		}
		raise(SIGUSR1);
		sigprocmask(SIG_UNBLOCK, &all, NULL);
		printf("sigblock done\n");
	} else if (!strcmp(mode, "signalled")) {
		// Another thread signals this one without pause while it
		// allocates: now and then a signal is delivered at the very
		// return (or entry) of a malloc the gate stops, its handler
		// run before the gate's stop.
		struct sigaction sa = {0};
		sa.sa_handler = on_usr2;
		sa.sa_flags = SA_RESTART;
		sigaction(SIGUSR2, &sa, NULL);
		struct pester pe = {pthread_self(), 0};
		pthread_t th;
		pthread_create(&th, NULL, pester, &pe);
		while (!usr2)
			; // the signals are coming
		for (long i = 1; i <= 300; i++) {
			long *p = malloc(40);
			stamp(p, i);
			free(p);
		}
		__atomic_store_n(&pe.stop, 1, __ATOMIC_SEQ_CST);
		pthread_join(th, NULL);
		printf("signalled done, handler ran: %d\n", usr2 > 0);
	} else if (!strcmp(mode, "neighbour")) {
		// Another process signals this one every 300 us while 40-byte
		// blocks come and go; the handler writes a block of another
		// size on the same heap page. A signal arriving while memtrap
		// stops a free has its handler run with the page still as
		// memtrap armed it, or not, never faulting for the target.
		struct sigaction sa = {0};
		sa.sa_handler = on_pester;
		sa.sa_flags = SA_RESTART;
		sigaction(SIGUSR1, &sa, NULL);
		neighbour = malloc(24);
		pid_t parent = getpid(), kid = fork();
		if (kid == 0) {
			while (kill(parent, SIGUSR1) == 0)
				usleep(300);
			_exit(0);
		}
		while (!pestered)
			usleep(100);
		for (long i = 1; i <= 300; i++) {
			long *p = malloc(40);
			stamp(p, i);
			free(p);
		}
		kill(kid, SIGKILL);
		waitpid(kid, NULL, 0);
		printf("neighbour done\n");
	}
	return 0;
}
