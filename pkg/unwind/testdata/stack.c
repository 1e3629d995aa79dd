/*
 * stack.c records its own stack for pkg/unwind's tests to replay.
 *
 * Usage: stack MODE OUT
 *   call      main -> f1 .. f7 -> dump
 *   signal    main -> f1 .. f7 -> spin, interrupted by a timer's SIGUSR1
 *             whose handler calls dump
 *   raise     main -> f1 .. f7 -> raise(SIGUSR1), handler calls dump
 *   altstack  as signal, with the handler on a sigaltstack mapped above
 *             the main stack when there is room, so that the CFA moves down
 *             across the signal frame
 *
 * dump writes OUT (little-endian):
 *   "MTRAPSTK", 17 registers in DWARF order (rax rdx rcx rbx rsi rdi rbp
 *   rsp r8..r15 rip) as they are in dump right after capture_regs returns,
 *   the interrupted rip and rsp as the handler saw them in its ucontext (0
 *   in call mode), u64 length + the text of /proc/self/maps, u64 region count, and per
 *   region u64 address, u64 length and its bytes: the stack from the
 *   captured rsp to the end of its mapping, and in the signal modes the
 *   interrupted stack from its rsp (less the red zone) to the end of its
 *   mapping.
 *
 * The functions differ in how they lay out their frames so that the CFI
 * the tests read and execute covers the common shapes: pushes of callee-
 * saved registers, large frames, a variable-length array (rbp as the CFA
 * register), a realigned stack (CFA expressions), a frame pointer, and a noreturn call as a
 * function's last instruction.
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <signal.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <ucontext.h>
#include <unistd.h>

#define NOINLINE __attribute__((noinline, noclone))

/* Built with frame pointers (-DFRAME_POINTERS), rbp is not ours to clobber. */
#ifdef FRAME_POINTERS
#define CLOBBER_RBP
#else
#define CLOBBER_RBP "rbp",
#endif

void capture_regs(uint64_t *out);
__asm__(".text\n"
	".globl capture_regs\n"
	".type capture_regs,@function\n"
	"capture_regs:\n"
	"  movq %rax, 0(%rdi)\n"
	"  movq %rdx, 8(%rdi)\n"
	"  movq %rcx, 16(%rdi)\n"
	"  movq %rbx, 24(%rdi)\n"
	"  movq %rsi, 32(%rdi)\n"
	"  movq %rdi, 40(%rdi)\n"
	"  movq %rbp, 48(%rdi)\n"
	"  leaq 8(%rsp), %rax\n"
	"  movq %rax, 56(%rdi)\n"
	"  movq %r8, 64(%rdi)\n"
	"  movq %r9, 72(%rdi)\n"
	"  movq %r10, 80(%rdi)\n"
	"  movq %r11, 88(%rdi)\n"
	"  movq %r12, 96(%rdi)\n"
	"  movq %r13, 104(%rdi)\n"
	"  movq %r14, 112(%rdi)\n"
	"  movq %r15, 120(%rdi)\n"
	"  movq (%rsp), %rax\n"
	"  movq %rax, 128(%rdi)\n"
	"  ret\n"
	".size capture_regs, .-capture_regs\n");

static uint64_t regs[17];
static const char *out_path;
static uint64_t interrupted_sp, interrupted_ip; /* set by the signal handler */
static char maps[1 << 16];
static volatile int sink;

static void put(int fd, const void *p, size_t n)
{
	const char *c = p;
	while (n > 0) {
		ssize_t w = write(fd, c, n);
		if (w <= 0)
			_exit(3);
		c += w;
		n -= (size_t)w;
	}
}

static void put64(int fd, uint64_t v) { put(fd, &v, 8); }

static uint64_t hex(const char **s)
{
	uint64_t v = 0;
	for (;; (*s)++) {
		char c = **s;
		if (c >= '0' && c <= '9')
			v = v * 16 + (uint64_t)(c - '0');
		else if (c >= 'a' && c <= 'f')
			v = v * 16 + (uint64_t)(c - 'a' + 10);
		else
			return v;
	}
}

static size_t read_maps(void)
{
	int fd = open("/proc/self/maps", O_RDONLY);
	size_t n = 0;
	ssize_t r;
	while (fd >= 0 && n < sizeof maps - 1 && (r = read(fd, maps + n, sizeof maps - 1 - n)) > 0)
		n += (size_t)r;
	maps[n] = 0;
	close(fd);
	return n;
}

/* mapping_end returns the end of the mapping containing addr. */
static uint64_t mapping_end(uint64_t addr)
{
	const char *s = maps;
	while (*s) {
		uint64_t lo = hex(&s);
		s++; /* '-' */
		uint64_t hi = hex(&s);
		if (addr >= lo && addr < hi)
			return hi;
		while (*s && *s != '\n')
			s++;
		if (*s)
			s++;
	}
	_exit(4);
}

static void put_region(int fd, uint64_t lo)
{
	uint64_t hi = mapping_end(lo);
	put64(fd, lo);
	put64(fd, hi - lo);
	put(fd, (const void *)(uintptr_t)lo, hi - lo);
}

NOINLINE static void write_dump(void)
{
	size_t n = read_maps();

	int fd = open(out_path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
	if (fd < 0)
		_exit(2);
	put(fd, "MTRAPSTK", 8);
	put(fd, regs, sizeof regs);
	put64(fd, interrupted_ip);
	put64(fd, interrupted_sp);
	put64(fd, n);
	put(fd, maps, n);
	put64(fd, interrupted_sp ? 2 : 1);
	put_region(fd, regs[7]);
	if (interrupted_sp)
		put_region(fd, interrupted_sp - 128);
	close(fd);
}

/* dump is frame 0 of every recording: its PC is right after the call. */
NOINLINE __attribute__((noreturn)) void dump(void)
{
	capture_regs(regs);
	write_dump();
	_exit(0);
}

NOINLINE void handler(int sig, siginfo_t *si, void *ctx)
{
	ucontext_t *uc = ctx;
	(void)sig;
	(void)si;
	interrupted_sp = (uint64_t)uc->uc_mcontext.gregs[REG_RSP];
	interrupted_ip = (uint64_t)uc->uc_mcontext.gregs[REG_RIP];
	dump();
}

static volatile int spinning = 1;
static volatile uint64_t spins;

/* spin is where the timer's signal finds the thread; its PC is exact. */
NOINLINE void spin(void)
{
	while (spinning)
		spins++;
}

static int mode;
enum { CALL, SIGNAL, RAISE, ALTSTACK };

static char altstack[1 << 16] __attribute__((aligned(16)));

/* high_altstack maps a signal stack above the main stack, or returns the
 * static one when nothing fits there. */
static void *high_altstack(void)
{
	int here;
	read_maps();
	uint64_t top = mapping_end((uint64_t)(uintptr_t)&here);
	for (uint64_t k = 1; k <= 64; k++) {
		void *want = (void *)(uintptr_t)(top + (k << 20));
		void *p = mmap(want, sizeof altstack, PROT_READ | PROT_WRITE,
			       MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, -1, 0);
		if (p == want)
			return p;
		if (p != MAP_FAILED)
			munmap(p, sizeof altstack);
	}
	return altstack;
}

NOINLINE static void arm(void)
{
	struct sigaction sa;
	memset(&sa, 0, sizeof sa);
	sa.sa_sigaction = handler;
	sa.sa_flags = SA_SIGINFO;
	if (mode == ALTSTACK) {
		stack_t ss = {.ss_sp = high_altstack(), .ss_size = sizeof altstack};
		if (sigaltstack(&ss, 0) != 0)
			_exit(5);
		sa.sa_flags |= SA_ONSTACK;
	}
	sigaction(SIGUSR1, &sa, 0);
}

/* f7: calls a noreturn function last, so its return address is its end. */
NOINLINE void f7(int x)
{
	sink = x;
	if (mode == CALL)
		dump();
	arm();
	if (mode == RAISE) {
		raise(SIGUSR1);
	} else {
		timer_t t;
		struct sigevent sev;
		memset(&sev, 0, sizeof sev);
		sev.sigev_notify = SIGEV_SIGNAL;
		sev.sigev_signo = SIGUSR1;
		struct itimerspec its = {.it_value = {.tv_nsec = 5 * 1000 * 1000}};
		if (timer_create(CLOCK_MONOTONIC, &sev, &t) != 0 || timer_settime(t, 0, &its, 0) != 0)
			_exit(6);
		spin();
	}
	abort();
}

/* f6 keeps a frame pointer even when the rest do not. */
__attribute__((optimize("no-omit-frame-pointer"))) NOINLINE int f6(int x)
{
	f7(x + 1);
	return sink + 1;
}

/* f5 realigns its stack for an over-aligned local next to a variable-length
 * array: gcc keeps the CFA through a DRAP register and then an expression. */
NOINLINE int f5(int x)
{
	char big[100] __attribute__((aligned(64)));
	char vla[x + 16];
	memset(big, x, sizeof big);
	memset(vla, x, (size_t)x + 16);
	__asm__ volatile("" : : "r"(big), "r"(vla) : "memory");
	return f6(big[x & 63] + vla[x]) + 1;
}

/* f4 has a variable-length array: its CFA is rbp-based. */
NOINLINE int f4(int x)
{
	char vla[x + 16];
	memset(vla, x, (size_t)x + 16);
	__asm__ volatile("" : : "r"(vla) : "memory");
	return f5(vla[x]) + 1;
}

/* f3 has a large frame. */
NOINLINE int f3(int x)
{
	volatile char buf[5000];
	buf[x] = (char)x;
	return f4(buf[x] + 1) + buf[x + 1];
}

/* f2 saves every callee-saved register. */
NOINLINE int f2(int x)
{
	int a = x * 3, b = x * 5, c = x * 7, d = x * 11, e = x * 13, g = x * 17;
	__asm__ volatile("" : "+r"(a), "+r"(b), "+r"(c), "+r"(d), "+r"(e), "+r"(g) : : "rbx", CLOBBER_RBP "r12",
			 "r13", "r14", "r15");
	int r = f3(x & 7);
	return r + a + b + c + d + e + g;
}

NOINLINE int f1(int x)
{
	return f2(x + 1) * 2;
}

int main(int argc, char **argv)
{
	if (argc != 3)
		return 1;
	out_path = argv[2];
	if (!strcmp(argv[1], "call"))
		mode = CALL;
	else if (!strcmp(argv[1], "signal"))
		mode = SIGNAL;
	else if (!strcmp(argv[1], "raise"))
		mode = RAISE;
	else if (!strcmp(argv[1], "altstack"))
		mode = ALTSTACK;
	else
		return 1;
	return f1(argc) + 1;
}
