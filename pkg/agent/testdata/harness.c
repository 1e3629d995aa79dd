/* Runs the agent inside this process, as memtrap will run it inside a
 * target: the blob (argv[1]) mapped with its area after it, its handler
 * installed for SIGSEGV over a handler of "the target's own", pages armed
 * (write-protected), a recipe per store site. Then stores of each kind the
 * recipes describe, a store with no recipe, and a fault that is not the
 * agent's; checks memory, every record and the counters, and prints one
 * line per check. */
#define _GNU_SOURCE
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <ucontext.h>
#include <unistd.h>

#include "../csrc/agent.h"

/* The stores, each a function of its own with a label after the store. */
void store8(long *p, long v);      /* mov %rsi,(%rdi) */
void store4(int *p, long i, int v); /* mov %edx,8(%rdi,%rsi,4) */
void store1(char *p);               /* movb $0x5a,100(%rdi) */
void storerip(long v);              /* mov %rsi,gpage(%rip) */
void storemiss(long *p, long v);    /* mov %rsi,(%rdi), no recipe */
long storexadd(long *p, long v);    /* lock xadd %rsi,(%rdi): not the agent's */
extern char store8_e[], store4_e[], store1_e[], storerip_e[], storemiss_e[];
char gpage[4096] __attribute__((aligned(4096)));
__asm__(".text\n"
	".globl store8, store8_e\nstore8: mov %rsi,(%rdi)\nstore8_e: ret\n"
	".globl store4, store4_e\nstore4: mov %edx,8(%rdi,%rsi,4)\nstore4_e: ret\n"
	".globl store1, store1_e\nstore1: movb $0x5a,100(%rdi)\nstore1_e: ret\n"
	".globl storerip, storerip_e\nstorerip: mov %rdi,gpage(%rip)\nstorerip_e: ret\n"
	".globl storemiss, storemiss_e\nstoremiss: mov %rsi,(%rdi)\nstoremiss_e: ret\n"
	".globl storexadd\nstorexadd: lock xadd %rsi,(%rdi)\nmov %rsi,%rax\nret\n");

static struct agent_area *area;
static volatile int own; /* faults "the target's own" handler saw */
static char *other;      /* a read-only page nobody arms */

static void fail(const char *what)
{
	printf("FAIL %s\n", what);
	exit(1);
}

/* The target's own handler: a fault on `other` (not memtrap's) gets the
 * page made writable; one on an armed page (the agent had no recipe) is
 * stepped over unwritten. */
static void on_own(int sig, siginfo_t *si, void *ctx)
{
	ucontext_t *uc = ctx;
	(void)sig;
	own++;
	if ((char *)si->si_addr >= other && (char *)si->si_addr < other + 4096)
		mprotect(other, 4096, PROT_READ | PROT_WRITE);
	else
		uc->uc_mcontext.gregs[REG_RIP] += 3;
}

static void add(struct agent_recipe r)
{
	unsigned h = (unsigned)((r.pc * 0x9e3779b97f4a7c15UL) >> 52) & (AGENT_RECIPES - 1);
	while (area->recipes[h].pc)
		h = (h + 1) & (AGENT_RECIPES - 1);
	area->recipes[h] = r;
}

static int next; /* the next record to check */

static int served_mode;

static void expect(u64 pc, u64 addr, u32 width, u64 old, u64 new)
{
	if (served_mode) {
		/* The server takes and checks the records. */
		next++;
		return;
	}
	if (area->head <= (u64)next)
		fail("a record missing");
	struct agent_record *r = &area->ring[next & (AGENT_RING - 1)];
	if (r->seq != (u64)next || r->pc != pc || r->addr != addr || r->width != width ||
	    r->old != old || r->new != new || r->tid != (u32)syscall(SYS_gettid) ||
	    r->gregs[REG_RIP] != pc)
		fail("a record");
	/* The stack copy is the stack at the fault: its top word is the
	 * return address of the store's function. */
	u64 ret;
	memcpy(&ret, r->stack + AGENT_REDZONE, 8);
	if (ret == 0)
		fail("the record's stack");
	next++;
	area->tail = next;
}

int main(int argc, char **argv)
{
	if (argc < 2)
		return 2;
	int fd = open(argv[1], O_RDONLY);
	static char blob[AGENT_CODE_SPAN];
	ssize_t n = fd < 0 ? -1 : read(fd, blob, sizeof blob);
	if (n < (ssize_t)sizeof(struct agent_header))
		fail("reading the blob");
	struct agent_header *hd = (struct agent_header *)blob;
	if (hd->magic != AGENT_HEADER_MAGIC || hd->size != (u32)n)
		fail("the blob's header");
	size_t span = AGENT_CODE_SPAN + ((sizeof(struct agent_area) + 4095) & ~4095UL);
	char *base = mmap(NULL, span, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	memcpy(base, blob, n);
	mprotect(base, AGENT_CODE_SPAN, PROT_READ | PROT_EXEC);
	int served = served_mode = argc > 2 && strcmp(argv[2], "--served") == 0;
	int areafd = -1;
	if (served) {
		/* The area in a memfd, for another process to map as memtrap
		 * will: it answers the requests and takes the records. */
		areafd = memfd_create("agent-area", MFD_CLOEXEC);
		if (areafd < 0 || ftruncate(areafd, span - AGENT_CODE_SPAN) != 0 ||
		    mmap(base + AGENT_CODE_SPAN, span - AGENT_CODE_SPAN, PROT_READ | PROT_WRITE,
			 MAP_SHARED | MAP_FIXED, areafd, 0) == MAP_FAILED)
			fail("the shared area");
	}
	area = (struct agent_area *)(base + AGENT_CODE_SPAN);
	area->magic = AGENT_MAGIC;
	area->version = AGENT_VERSION;
	area->memfd = open("/proc/self/mem", O_RDWR | O_CLOEXEC);
	area->pid = getpid();

	long *p = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	other = mmap(NULL, 4096, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	memset(p, 0, 4096);
	/* In order, as the agent looks them up. */
	area->pages[0] = (u64)p < (u64)gpage ? (u64)p : (u64)gpage;
	area->pages[1] = (u64)p < (u64)gpage ? (u64)gpage : (u64)p;
	area->npages = 2;
	area->prots[0] = area->prots[1] = PROT_READ | PROT_WRITE;
	if (served) {
		area->served = 1;
		goto armed;
	}
	if (argc > 3 && strcmp(argv[2], "--recipes") == 0) {
		/* memtrap's recipes (agent.RecipeFor), from a file of them */
		int rf = open(argv[3], O_RDONLY);
		struct agent_recipe r;
		while (rf >= 0 && read(rf, &r, sizeof r) == sizeof r)
			add(r);
		goto armed;
	}
	add((struct agent_recipe){.pc = (u64)store8, .len = store8_e - (char *)store8, .width = 8,
		.src = AGENT_SRC_REG, .reg = REG_RSI, .base = REG_RDI, .index = AGENT_NOREG, .scale = 1});
	add((struct agent_recipe){.pc = (u64)store4, .len = store4_e - (char *)store4, .width = 4,
		.src = AGENT_SRC_REG, .reg = REG_RDX, .base = REG_RDI, .index = REG_RSI, .scale = 4, .disp = 8});
	add((struct agent_recipe){.pc = (u64)store1, .len = store1_e - (char *)store1, .width = 1,
		.src = AGENT_SRC_IMM, .imm = 0x5a, .base = REG_RDI, .index = AGENT_NOREG, .scale = 1, .disp = 100});
	int disp;
	char *volatile rip_end = storerip_e;
	memcpy(&disp, rip_end - 4, 4);
	add((struct agent_recipe){.pc = (u64)storerip, .len = storerip_e - (char *)storerip, .width = 8,
		.src = AGENT_SRC_REG, .reg = REG_RDI, .base = AGENT_RIP, .index = AGENT_NOREG, .scale = 1, .disp = disp});

armed:
	/* The target's own handler first, then the agent's over it. */
	struct sigaction sa;
	memset(&sa, 0, sizeof sa);
	sa.sa_sigaction = on_own;
	sa.sa_flags = SA_SIGINFO;
	sigaction(SIGSEGV, &sa, NULL);
	/* As Install sets it: SIGSEGV and SIGSYS never blocked (the agent's
	 * copy of the stack may fault, and comes back to the handler). */
	struct agent_sigaction mine = {(u64)(base + hd->handler),
		SA_SIGINFO | SA_ONSTACK | SA_NODEFER | 0x04000000 /* SA_RESTORER */,
		(u64)(base + hd->restorer), ~0UL & ~(1UL << (SIGSEGV - 1) | 1UL << (SIGSYS - 1))};
	if (syscall(SYS_rt_sigaction, SIGSEGV, &mine, &area->old, 8) != 0)
		fail("installing the handler");
	if (area->old.handler != (u64)on_own)
		fail("the old action");
	mprotect(p, 4096, PROT_READ);
	mprotect(gpage, 4096, PROT_READ);

	if (served) {
		/* Ready: the server maps the area, then says go. */
		char line[8];
		printf("memfd %d\n", areafd);
		fflush(stdout);
		if (!fgets(line, sizeof line, stdin))
			fail("no go from the server");
	}
	if (argc > 2 && strcmp(argv[2], "--recipes") != 0 && !served) {
		/* Timing: `harness agent.bin N` makes N stores and prints the
		 * microseconds each took, its records consumed as they come. */
		long n = atol(argv[2]);
		struct timespec t0, t1;
		clock_gettime(CLOCK_MONOTONIC, &t0);
		for (long i = 0; i < n; i++) {
			store8(p, i);
			area->tail = area->head;
		}
		clock_gettime(CLOCK_MONOTONIC, &t1);
		printf("%.2f us per store, %lu records\n", ((t1.tv_sec - t0.tv_sec) * 1e9 + (t1.tv_nsec - t0.tv_nsec)) / 1e3 / n, area->head);
		return 0;
	}
	const int N = 1000;
	for (long i = 1; i <= N; i++) {
		store8(p, i);
		expect((u64)store8, (u64)p, 8, i - 1, i);
	}
	printf("8-byte register stores: %d, last %ld\n", N, p[0]);
	int *q = (int *)p;
	store4(q, 3, 0x11223344);
	expect((u64)store4, (u64)(q + 5), 4, 0, 0x11223344);
	printf("4-byte base+index*4+8 store: %#x at +%ld\n", q[5], (long)((char *)(q + 5) - (char *)p));
	store1((char *)p);
	expect((u64)store1, (u64)p + 100, 1, 0, 0x5a);
	printf("1-byte immediate store: %#x\n", ((unsigned char *)p)[100]);
	storerip(-2);
	expect((u64)storerip, (u64)gpage, 8, 0, (u64)-2);
	printf("RIP-relative store: %ld\n", *(long *)gpage);
	storemiss(p + 8, 7);
	if (area->head != (u64)next || p[8] != 0)
		fail("the store with no recipe");
	printf("no recipe: passed on (misses %lu, own handler %d)\n", area->misses, own);
	storemiss((long *)other, 9);
	printf("not memtrap's: passed on (chained %lu, own handler %d), value %ld\n", area->chained, own, *(long *)other);
	/* A forked child shares the area and the parent's /proc/self/mem:
	 * the agent must not complete its stores (they would land in the
	 * parent); it gives the child its pages back, and the child's store
	 * lands in its own memory, unrecorded. */
	fflush(stdout);
	u64 before = area->head;
	pid_t child = fork();
	if (child == 0) {
		store8(p, 77);
		_exit(p[0] == 77 && area->head == before ? 0 : 1);
	}
	int st;
	if (child < 0 || waitpid(child, &st, 0) != child || !WIFEXITED(st) || WEXITSTATUS(st) != 0)
		fail("the forked child");
	printf("forked child: its pages given back, its store its own (the parent's value %ld, records %lu)\n", p[0], area->head);
	printf("records %lu\n", area->head);
	if (served) {
		/* A read-modify-write the agent does not do: the server does
		 * it from the signal frame, registers and flags included. */
		long r1 = storexadd(p + 16, 5), r2 = storexadd(p + 16, 5);
		printf("lock xadd, done by the server: returned %ld then %ld, memory %ld, records %lu\n", r1, r2, p[16], area->head);
	}
	return 0;
}
