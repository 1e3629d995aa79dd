/* memtrap's in-target agent, the fast engine's (#15): a SIGSEGV handler
 * that completes a trapped store inside the target, with no ptrace stop.
 * memtrap maps this code and the area of agent.h after it, fills the area
 * (the armed pages, a recipe per store site, the target's own SIGSEGV and
 * SIGSYS actions) and installs agent_handler for SIGSEGV and SIGSYS, every
 * other signal blocked while it runs. For a write fault on an armed page at
 * a pc with a recipe, the handler computes the store's address and value
 * (a read-modify-write's with its flags) from the saved registers, writes
 * it through /proc/self/mem (which writes past the protection), appends a
 * record (old and new value, registers, top of stack) to the ring memtrap
 * reads, and returns past the store; a store with no recipe it asks memtrap
 * to do from the frame. A SIGSYS from memtrap's seccomp filter is a call
 * that would block SIGSEGV or SIGSYS (done without them) or one that may
 * write an armed page (its buffers bounced, memtrap told). Any other
 * signal goes to the target's own action. No libc: raw system calls, no
 * writable data of its own (everything it keeps is in the area),
 * position-independent.
 *
 * Built by `make agent` (build.sh) into agent.bin, which is committed:
 * building memtrap needs no C compiler; agent_test.go checks that the blob
 * is what this source builds to. */
#include "agent.h"

#define SYS_pwrite64 18
#define SYS_pread64 17
#define SYS_rt_sigaction 13
#define SYS_rt_sigreturn 15
#define SYS_gettid 186
#define SYS_getpid 39
#define SYS_arch_prctl 158
#define ARCH_GET_FS 0x1003
#define ARCH_GET_GS 0x1004
#define SYS_mprotect 10
#define SYS_futex 202
#define SYS_poll 7
#define SYS_kill 62
#define POLLIN 1
#define POLLNVAL 0x20
#define ESRCH 3
#define SYS_mmap 9
#define SYS_munmap 11
#define SYS_tgkill 234
#define SIGSYS 31
#define SYS_SECCOMP 1
#define PROT_READ 1
#define MAP_PRIVATE 2
#define MAP_ANONYMOUS 0x20
#define FUTEX_WAIT 0
#define FUTEX_WAKE 1
#define SIGSEGV 11
#define SEGV_ACCERR 2
#define SA_SIGINFO 4
#define SA_RESETHAND 0x80000000UL
#define SYS_rt_sigprocmask 14
#define SYS_rt_sigsuspend 130
#define SYS_pselect6 270
#define SYS_close 3
#define SYS_mremap 25
#define SYS_pkey_mprotect 329
#define MAP_FIXED 0x10
#define MAP_FIXED_NOREPLACE 0x100000
#define SYS_close_range 436
#define SYS_ppoll 271
#define SYS_readv 19
#define SYS_madvise 28
#define SYS_recvmsg 47
#define SYS_preadv 295
#define SYS_recvmmsg 299
#define SYS_process_vm_readv 310
#define SYS_preadv2 327
#define SYS_epoll_pwait 281
#define SYS_epoll_pwait2 441
#define SIG_SETMASK 2
#define SEGV_BIT (1UL << (SIGSEGV - 1))
/* Never blocked either: a trapped call with SIGSYS blocked kills too. */
#define NEVER (SEGV_BIT | (1UL << (SIGSYS - 1)))
#define PROT_WRITE 2

/* ucontext_t: uc_mcontext.gregs follows uc_flags, uc_link, uc_stack. */
#define UC_GREGS 40
#define UC_SIGMASK 296 /* after uc_mcontext's 256 bytes */
#define REG_R8 0
#define REG_R9 1
#define REG_R10 2
#define REG_RDI 8
#define REG_RSI 9
#define REG_RDX 12
#define REG_RAX 13
#define REG_RSP 15
#define REG_RIP 16
#define REG_EFL 17

extern struct agent_area agent_area __attribute__((visibility("hidden")));

__asm__(".section .text.head,\"ax\",@progbits\n"
	"agent_start:\n"
	".long 0x6d74676e\n"
	".long agent_handler - agent_start\n"
	".long agent_restorer - agent_start\n"
	".long agent_end - agent_start\n"
	".text\n");

/* agent_restorer is the sa_restorer: the handler returns here. */
__asm__(".text\n"
	".globl agent_restorer\n"
	".type agent_restorer,@function\n"
	"agent_restorer:\n"
	"mov $15, %eax\n" /* rt_sigreturn */
	"syscall\n"
	"hlt\n");

/* copy copies n bytes from src to dst as far as src can be read, and
 * returns how many it copied: a fault in its rep movsb (memory not mapped)
 * comes back to the handler, which resumes at copy_stop (fixup, as the
 * kernel's exception tables do), the count left in rcx. */
u64 copy(void *dst, const void *src, u64 n) __attribute__((visibility("hidden")));
extern char copy_insn[] __attribute__((visibility("hidden")));
extern char copy_stop[] __attribute__((visibility("hidden")));
__asm__(".text\n"
	".hidden copy, copy_insn, copy_stop\n"
	"copy:\n"
	"mov %rdx, %rcx\n"
	"copy_insn:\n"
	"rep movsb\n"
	"copy_stop:\n"
	"mov %rdx, %rax\n"
	"sub %rcx, %rax\n"
	"ret\n");

static long sys4(long nr, long a, long b, long c, long d)
{
	long r;
	register long r10 __asm__("r10") = d;
	__asm__ volatile("syscall"
			 : "=a"(r)
			 : "a"(nr), "D"(a), "S"(b), "d"(c), "r"(r10)
			 : "rcx", "r11", "memory");
	return r;
}

static long sys6(long nr, long a, long b, long c, long d, long e, long f)
{
	long r;
	register long r10 __asm__("r10") = d;
	register long r8 __asm__("r8") = e;
	register long r9 __asm__("r9") = f;
	__asm__ volatile("syscall"
			 : "=a"(r)
			 : "a"(nr), "D"(a), "S"(b), "d"(c), "r"(r10), "r"(r8), "r"(r9)
			 : "rcx", "r11", "memory");
	return r;
}

/* armed says whether addr lies on an armed page: 1 + its index, or 0
 * (the pages are in order: a binary search). */
static u32 armed(struct agent_area *a, u64 addr)
{
	u64 page = addr & ~0xfffUL;
	u32 lo = 0, hi = a->npages < AGENT_PAGES ? a->npages : AGENT_PAGES;
	while (lo < hi) {
		u32 mid = lo + (hi - lo) / 2;
		if (a->pages[mid] == page)
			return mid + 1;
		if (a->pages[mid] < page)
			lo = mid + 1;
		else
			hi = mid;
	}
	return 0;
}

static struct agent_recipe *recipe(struct agent_area *a, u64 pc)
{
	u32 h = (u32)((pc * 0x9e3779b97f4a7c15UL) >> 52) & (AGENT_RECIPES - 1);
	for (u32 i = 0; i < AGENT_RECIPES; i++) {
		struct agent_recipe *r = &a->recipes[(h + i) & (AGENT_RECIPES - 1)];
		if (r->pc == pc)
			return r;
		if (r->pc == 0)
			return 0;
	}
	return 0;
}

static u64 widthMask(u32 w)
{
	return w >= 8 ? ~0UL : (1UL << (8 * w)) - 1;
}

static u64 load(u64 addr, u32 w)
{
	switch (w) {
	case 1: return *(volatile u8 *)addr;
	case 2: return *(volatile unsigned short *)addr;
	case 4: return *(volatile u32 *)addr;
	}
	return *(volatile u64 *)addr;
}

#define F_CF 0x1UL
#define F_PF 0x4UL
#define F_AF 0x10UL
#define F_ZF 0x40UL
#define F_SF 0x80UL
#define F_OF 0x800UL

/* alu computes a read-modify-write of w bytes: a (memory) op b, and the
 * flags in *efl, as the CPU would. */
static u64 alu(u32 op, u64 a, u64 b, u32 w, u64 *efl)
{
	u32 bits = 8 * w;
	u64 mask = widthMask(w), sign = 1UL << (bits - 1), res = 0;
	int cf = 0, of = 0, af = 0, keep = 0;
	a &= mask;
	b &= mask;
	switch (op) {
	case AGENT_OP_INC:
		b = 1;
		keep = 1;
		/* fall through */
	case AGENT_OP_ADD:
		res = (a + b) & mask;
		cf = w == 8 ? res < a : (int)(((a + b) >> bits) & 1);
		of = ((a ^ res) & (b ^ res) & sign) != 0;
		af = ((a ^ b ^ res) & 0x10) != 0;
		break;
	case AGENT_OP_DEC:
		b = 1;
		keep = 1;
		/* fall through */
	case AGENT_OP_SUB:
		res = (a - b) & mask;
		cf = a < b;
		of = ((a ^ b) & (a ^ res) & sign) != 0;
		af = ((a ^ b ^ res) & 0x10) != 0;
		break;
	case AGENT_OP_AND:
		res = a & b;
		break;
	case AGENT_OP_OR:
		res = a | b;
		break;
	case AGENT_OP_XOR:
		res = a ^ b;
		break;
	}
	u64 f = *efl & ~(F_CF | F_PF | F_AF | F_ZF | F_SF | F_OF);
	if (keep)
		f |= *efl & F_CF;
	else if (cf)
		f |= F_CF;
	if (of)
		f |= F_OF;
	if (af)
		f |= F_AF;
	if (res == 0)
		f |= F_ZF;
	if (res & sign)
		f |= F_SF;
	u64 p = res & 0xff;
	p ^= p >> 4;
	p ^= p >> 2;
	p ^= p >> 1;
	if (!(p & 1))
		f |= F_PF;
	*efl = f;
	return res;
}

static int orphaned(struct agent_area *a);

/* lock takes the area's lock; memtrap, gone while it held it, leaves it
 * taken for ever: then the lock is taken anyway. */
static void lock(struct agent_area *a)
{
	for (u32 n = 1; __atomic_exchange_n(&a->lock, 1, __ATOMIC_ACQUIRE); n++) {
		__builtin_ia32_pause();
		if (n % (1 << 20) == 0 && orphaned(a))
			return;
	}
}

static void unlock(struct agent_area *a)
{
	__atomic_store_n(&a->lock, 0, __ATOMIC_RELEASE);
}

/* chain hands a signal that is not memtrap's to the target's own action
 * for it (act: the Area's copy). Its handler is called as the kernel would
 * have. For the default action (and for an ignored one, which the kernel
 * does not honour for a forced signal) the default goes back: a SIGSEGV
 * comes again on return, a SIGSYS is sent again; the kernel acts on it as
 * without memtrap. */
static void chain(struct agent_area *a, struct agent_sigaction *act, int sig, void *si, void *uc)
{
	__atomic_add_fetch(&a->chained, 1, __ATOMIC_RELAXED);
	u64 h = act->handler, flags = act->flags;
	if (h <= 1) {
		struct agent_sigaction dfl = {0, 0, 0, 0};
		sys4(SYS_rt_sigaction, sig, (long)&dfl, 0, 8);
		if (sig != SIGSEGV)
			sys4(SYS_tgkill, sys4(SYS_getpid, 0, 0, 0, 0), sys4(SYS_gettid, 0, 0, 0, 0), sig, 0);
		return;
	}
	if (flags & SA_RESETHAND)
		act->handler = 0;
	/* The mask the kernel would give the handler: the thread's at the
	 * signal and the action's. But never SIGSEGV, which the kernel would
	 * block too (without SA_NODEFER): a store of the handler's own to an
	 * armed page must trap into the agent again, and a fault with
	 * SIGSEGV blocked would kill the process. The sigreturn after the
	 * handler puts the thread's own mask back. */
	u64 mask = (*(u64 *)((char *)uc + UC_SIGMASK) | act->mask) & ~NEVER;
	sys4(SYS_rt_sigprocmask, SIG_SETMASK, (long)&mask, 0, 8);
	if (flags & SA_SIGINFO)
		((void (*)(int, void *, void *))h)(sig, si, uc);
	else
		((void (*)(int))h)(sig);
}

/* sameMemory says whether this process, not the one the area is for,
 * shares its memory (a vfork or CLONE_VM child: its stores are the
 * target's own): a value stored on this stack reads back the same through
 * the target's /proc/self/mem, twice. */
static int sameMemory(struct agent_area *a)
{
	volatile u64 probe;
	u64 got;
	for (u64 k = 1; k <= 2; k++) {
		u64 v = ((u64)sys4(SYS_gettid, 0, 0, 0, 0) << 32) ^ (k * 0x9e3779b97f4a7c15UL) ^ __builtin_ia32_rdtsc();
		probe = v;
		if (sys6(SYS_pread64, a->memfd, (long)&got, 8, (long)&probe, 0, 0) != 8 || got != v)
			return 0;
	}
	return 1;
}

/* forked says whether this process is a forked child of the target's:
 * it shares this area and the descriptor of its parent's /proc/self/mem,
 * so its stores are not the agent's to complete. The token's page reads 0
 * in it (MADV_WIPEONFORK); a vfork or CLONE_VM child shares the page, and
 * its stores are the target's own. Without a token, getpid and a probe
 * tell, two system calls more. */
static int forked(struct agent_area *a)
{
	if (a->token)
		return *(volatile u64 *)a->token == 0;
	return (u64)sys4(SYS_getpid, 0, 0, 0, 0) != a->pid && !sameMemory(a);
}

/* release gives every armed page its own protection back, in a forked
 * child (the area, shared with the parent, is not written). */
static void release(struct agent_area *a)
{
	u32 n = a->npages < AGENT_PAGES ? a->npages : AGENT_PAGES;
	for (u32 i = 0; i < n; i++)
		if (!(a->prots[i] & AGENT_DISARMED))
			sys4(SYS_mprotect, (long)a->pages[i], 0x1000, (long)a->prots[i], 0);
}

static long sysargs(long nr, const long *x)
{
	return sys6(nr, x[0], x[1], x[2], x[3], x[4], x[5]);
}

/* mm does the target's own memory management over armed pages (mprotect,
 * munmap, mremap, mmap MAP_FIXED: the filter traps them) as it asked, then
 * keeps the books, as the page engine does: a watched page it makes
 * writable is armed with its new protection; one it makes read-only is its
 * own until then (DISARMED: its faults are its own); one it unmaps or
 * replaces is dropped for good, and memtrap told (MM). It returns 0 for any
 * other call. */
static struct agent_request *post(struct agent_area *a, u64 pc, u32 kind, void *uc, u64 scratch, s64 ret);
static void done(struct agent_request *q);

/* madvise runs a madvise the filter trapped near armed pages: with the
 * bytes of those in its range kept, under the lock, for memtrap to record
 * what the call changed (MADVISE). */
static int madvise(struct agent_area *a, long *x, long *r, u64 pc, void *uc)
{
	u64 lo = (u64)x[0] & ~0xfffUL, hi = ((u64)x[0] + (u64)x[1] + 0xfff) & ~0xfffUL;
	u32 n = a->npages < AGENT_PAGES ? a->npages : AGENT_PAGES, k = 0;
	if (forked(a) || !__atomic_load_n(&a->served, __ATOMIC_ACQUIRE))
		return 0;
	lock(a);
	for (u32 i = 0; i < n; i++)
		if (a->pages[i] >= lo && a->pages[i] < hi && !(a->prots[i] & AGENT_DROPPED))
			k++;
	long scratch = 0;
	if (k) {
		scratch = sys6(SYS_mmap, 0, (long)k << 12, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
		if (scratch < 0 && scratch > -4096)
			scratch = 0;
	}
	u32 j = 0;
	for (u32 i = 0; scratch && i < n; i++) {
		u64 pg = a->pages[i];
		if (pg >= lo && pg < hi && !(a->prots[i] & AGENT_DROPPED)) {
			if (sys6(SYS_pread64, a->memfd, scratch + ((long)j << 12), 0x1000, (long)pg, 0, 0) != 0x1000) {
				sys4(SYS_munmap, scratch, (long)k << 12, 0, 0);
				scratch = 0;
			}
			j++;
		}
	}
	*r = sysargs(SYS_madvise, x);
	if (scratch && *r == 0) {
		struct agent_request *q = post(a, pc, AGENT_REQ_MADVISE, uc, (u64)scratch, *r);
		if (q)
			done(q);
	}
	unlock(a);
	if (scratch)
		sys4(SYS_munmap, scratch, (long)k << 12, 0, 0);
	return 1;
}

static int mm(struct agent_area *a, long nr, long *x, long *r, u64 pc, void *uc)
{
	u64 lo = (u64)x[0], hi = (u64)x[0] + (u64)x[1];
	long prot = -1;
	if (nr == SYS_madvise)
		return madvise(a, x, r, pc, uc);
	switch (nr) {
	case SYS_mprotect:
	case SYS_pkey_mprotect:
		prot = x[2];
		break;
	case SYS_munmap:
	case SYS_mremap:
		break;
	case SYS_mmap:
		if (!(x[3] & (MAP_FIXED | MAP_FIXED_NOREPLACE)))
			return 0;
		break;
	default:
		return 0;
	}
	*r = sysargs(nr, x);
	if (*r < 0 && *r > -4096)
		return 1; /* it failed: nothing changed */
	if (nr == SYS_mremap && (u64)*r == lo)
		lo += (u64)x[2]; /* in place: only what it shrank away */
	hi = (hi + 0xfff) & ~0xfffUL;
	int dropped = 0;
	lock(a);
	u32 n = a->npages < AGENT_PAGES ? a->npages : AGENT_PAGES;
	for (u32 i = 0; i < n; i++) {
		u64 pg = a->pages[i];
		if (pg + 0x1000 <= lo || pg >= hi || (a->prots[i] & AGENT_DROPPED))
			continue;
		if (nr != SYS_mprotect && nr != SYS_pkey_mprotect) {
			a->prots[i] = AGENT_DROPPED | AGENT_DISARMED;
			dropped = 1;
		} else if (prot & PROT_WRITE) {
			a->prots[i] = (u64)prot;
			sys4(SYS_mprotect, (long)pg, 0x1000, prot & ~PROT_WRITE, 0);
		} else {
			a->prots[i] = (u64)prot | AGENT_DISARMED;
		}
	}
	unlock(a);
	if (dropped && __atomic_load_n(&a->served, __ATOMIC_ACQUIRE)) {
		struct agent_request *q = post(a, pc, AGENT_REQ_MM, uc, 0, *r);
		if (q)
			done(q);
	}
	return 1;
}

/* orphaned says whether memtrap is gone (killed: the target outlives it).
 * Then the agent gives the armed pages their protections back, once: the
 * stores run as without memtrap, and nothing waits for it any more. Its
 * pidfd says so; if the target closed that, kill(pid, 0) does. */
static int orphaned(struct agent_area *a)
{
	if (__atomic_load_n(&a->gone, __ATOMIC_ACQUIRE))
		return 1;
	int dead;
	struct { int fd; short events, revents; } pfd = {a->mpidfd, POLLIN, 0};
	long n = a->mpidfd >= 0 ? sys4(SYS_poll, (long)&pfd, 1, 0, 0) : -1;
	if (n >= 0 && !(pfd.revents & POLLNVAL))
		dead = n > 0;
	else
		dead = sys4(SYS_kill, (long)a->mpid, 0, 0, 0) == -ESRCH;
	if (!dead)
		return 0;
	__atomic_store_n(&a->served, 0, __ATOMIC_RELEASE);
	release(a);
	__atomic_store_n(&a->gone, 1, __ATOMIC_RELEASE);
	return 1;
}

/* post posts a request of kind for pc (uc: the thread's ucontext) and
 * waits for memtrap's answer: the answered slot, which the caller frees
 * (done) once it has read it, or 0 if no slot was free or memtrap did not
 * answer in time. scratch and ret go with a KERNEL_DONE. */
static struct agent_request *post(struct agent_area *a, u64 pc, u32 kind, void *uc, u64 scratch, s64 ret)
{
	for (int tries = 0; tries < 1000; tries++) {
		for (u32 i = 0; i < AGENT_REQUESTS; i++) {
			struct agent_request *q = &a->requests[i];
			u32 free = AGENT_REQ_FREE;
			if (!__atomic_compare_exchange_n(&q->state, &free, AGENT_REQ_TAKEN, 0, __ATOMIC_ACQUIRE, __ATOMIC_RELAXED))
				continue;
			q->pc = pc;
			q->tid = (u32)sys4(SYS_gettid, 0, 0, 0, 0);
			q->kind = kind;
			q->result = 0;
			q->uc = (u64)uc;
			q->scratch = scratch;
			q->ret = ret;
			q->size = 0;
			q->nout = 0;
			if (kind == AGENT_REQ_COMPLETE) {
				sys4(SYS_arch_prctl, ARCH_GET_FS, (long)&q->fsbase, 0, 0);
				sys4(SYS_arch_prctl, ARCH_GET_GS, (long)&q->gsbase, 0, 0);
			}
			__atomic_store_n(&q->state, AGENT_REQ_POSTED, __ATOMIC_RELEASE);
			__atomic_add_fetch(&a->asked, 1, __ATOMIC_RELEASE);
			if (__atomic_load_n(&a->waiting, __ATOMIC_ACQUIRE))
				sys4(SYS_futex, (long)&a->head, FUTEX_WAKE, 1, 0);
			/* memtrap answers in microseconds; ten seconds is a
			 * memtrap that is gone. */
			for (int w = 0; w < 1000; w++) {
				if (__atomic_load_n(&q->state, __ATOMIC_ACQUIRE) == AGENT_REQ_ANSWERED)
					return q;
				struct { long s, ns; } ts = {0, 10000000};
				sys4(SYS_futex, (long)&q->state, FUTEX_WAIT, AGENT_REQ_POSTED, (long)&ts);
				if (w % 8 == 7 && orphaned(a))
					return 0;
			}
			if (__atomic_load_n(&q->state, __ATOMIC_ACQUIRE) == AGENT_REQ_ANSWERED)
				return q;
			return 0;
		}
		struct { long s, ns; } ts = {0, 100000};
		sys4(SYS_futex, (long)&a->requests[0].state, FUTEX_WAIT, AGENT_REQ_POSTED, (long)&ts);
		if (tries % 64 == 63 && orphaned(a))
			return 0;
	}
	return 0;
}

static void done(struct agent_request *q)
{
	__atomic_store_n(&q->state, AGENT_REQ_FREE, __ATOMIC_RELEASE);
}

/* ask posts a request and says whether memtrap did what it asked. */
static int ask(struct agent_area *a, u64 pc, u32 kind, void *uc)
{
	struct agent_request *q = post(a, pc, kind, uc, 0, 0);
	if (!q)
		return 0;
	int ok = q->result == 0;
	done(q);
	return ok;
}

/* peek reads n bytes of the target at addr into b, through
 * /proc/self/mem: a bad pointer is an error, not a fault in the agent. */
static int peek(struct agent_area *a, void *b, long n, u64 addr)
{
	return addr && sys6(SYS_pread64, a->memfd, (long)b, n, (long)addr, 0, 0) == n;
}

static int poke(struct agent_area *a, const void *b, long n, u64 addr)
{
	return sys6(SYS_pwrite64, a->memfd, (long)b, n, (long)addr, 0, 0) == n;
}

#define SIGKILL_BIT (1UL << 8)
#define SIGSTOP_BIT (1UL << 18)
#define EFAULT 14
#define EBADF 9
#define EINVAL 22
#define SIG_BLOCK 0
#define SIG_UNBLOCK 1

/* unmasked does the calls that would block SIGSEGV, which must never be
 * blocked (a fault with SIGSEGV blocked kills the process): the filter
 * traps them all. rt_sigprocmask is done on the mask the thread returns to
 * (the frame's: the handler's own is not the thread's), SIGSEGV left out;
 * rt_sigaction of another signal and rt_sigsuspend run with copies of
 * their masks without it. It returns 0 for a call that is not one of
 * them, else 1 with the result in *r. The thread sees SIGSEGV unblocked
 * where it asked for it blocked (its oldset, its handlers' masks). */
static int unmasked(struct agent_area *a, long nr, long *x, void *uc, long *r)
{
	u64 *ucmask = (u64 *)((char *)uc + UC_SIGMASK);
	u64 set;
	switch (nr) {
	case SYS_rt_sigprocmask: {
		if (x[3] != 8) {
			*r = -EINVAL;
			return 1;
		}
		u64 old = *ucmask, nw = old;
		if (x[1]) {
			if (!peek(a, &set, 8, (u64)x[1])) {
				*r = -EFAULT;
				return 1;
			}
			if (x[0] == SIG_BLOCK)
				nw = old | set;
			else if (x[0] == SIG_UNBLOCK)
				nw = old & ~set;
			else if (x[0] == SIG_SETMASK)
				nw = set;
			else {
				*r = -EINVAL;
				return 1;
			}
		}
		if (x[2] && !poke(a, &old, 8, (u64)x[2])) {
			*r = -EFAULT;
			return 1;
		}
		*ucmask = nw & ~(NEVER | SIGKILL_BIT | SIGSTOP_BIT);
		*r = 0;
		return 1;
	}
	case SYS_rt_sigaction: {
		struct agent_sigaction act;
		if (x[1] && x[0] != SIGSEGV && x[0] != SIGSYS && peek(a, &act, sizeof act, (u64)x[1])) {
			act.mask &= ~NEVER;
			*r = sys4(SYS_rt_sigaction, x[0], (long)&act, x[2], x[3]);
			return 1;
		}
		*r = sys4(SYS_rt_sigaction, x[0], x[1], x[2], x[3]);
		return 1;
	}
	case SYS_close:
		/* The agent's own descriptors stay open: the target is told
		 * what it would be without memtrap, that they are none of
		 * its own (a daemon closing every descriptor). */
		if (x[0] == a->memfd || (a->mpidfd >= 0 && x[0] == a->mpidfd)) {
			*r = -EBADF;
			return 1;
		}
		*r = sys4(SYS_close, x[0], 0, 0, 0);
		return 1;
	case SYS_close_range: {
		/* Around them: the ranges between the agent's descriptors. */
		u64 first = (u64)x[0] & 0xffffffffUL, last = (u64)x[1] & 0xffffffffUL;
		long own[2] = {a->memfd, a->mpidfd};
		if (own[0] > own[1]) {
			long t = own[0];
			own[0] = own[1];
			own[1] = t;
		}
		*r = 0;
		if (first > last) {
			*r = -EINVAL;
			return 1;
		}
		for (int k = 0; k < 2 && first <= last; k++) {
			if (own[k] < 0 || (u64)own[k] < first || (u64)own[k] > last)
				continue;
			if ((u64)own[k] > first) {
				long e = sys4(SYS_close_range, (long)first, own[k] - 1, x[2], 0);
				if (e < 0) {
					*r = e;
					return 1;
				}
			}
			first = (u64)own[k] + 1;
		}
		if (first <= last && first != 0x100000000UL)
			*r = sys4(SYS_close_range, (long)first, (long)last, x[2], 0);
		return 1;
	}
	case SYS_rt_sigsuspend:
		if (x[1] == 8 && peek(a, &set, 8, (u64)x[0])) {
			set &= ~NEVER;
			*r = sys4(SYS_rt_sigsuspend, (long)&set, 8, 0, 0);
		} else {
			*r = sys4(SYS_rt_sigsuspend, x[0], x[1], 0, 0);
		}
		return 1;
	}
	return 0;
}

/* reaches says whether [p, p+n) covers part of an armed page. */
static int reaches(struct agent_area *a, u64 p, u64 n)
{
	if (!p || !n)
		return 0;
	u64 lo = p & ~0xfffUL, hi = p + n < p ? ~0UL : p + n;
	u32 l = 0, h = a->npages < AGENT_PAGES ? a->npages : AGENT_PAGES;
	while (l < h) {
		u32 mid = l + (h - l) / 2;
		if (a->pages[mid] < lo)
			l = mid + 1;
		else
			h = mid;
	}
	return l < (a->npages < AGENT_PAGES ? a->npages : AGENT_PAGES) && a->pages[l] < hi;
}

#define MAX_IOV 1024 /* UIO_MAXIOV, recvmmsg's cap on messages too */

/* iovsReach says whether an iovec array lists a buffer on an armed page
 * (1 too where it cannot be read: memtrap then looks, and the call fails
 * as it would have). */
static int iovsReach(struct agent_area *a, u64 arr, u64 cnt)
{
	struct {
		u64 base, len;
	} v[32];
	if (cnt > MAX_IOV)
		return 0; /* EINVAL, from the kernel */
	for (u64 i = 0; i < cnt; i += 32) {
		u64 k = cnt - i < 32 ? cnt - i : 32;
		if (!peek(a, v, (long)(16 * k), arr + 16 * i))
			return 1;
		for (u64 j = 0; j < k; j++)
			if (reaches(a, v[j].base, v[j].len))
				return 1;
	}
	return 0;
}

/* hdrReaches: the same for a msghdr at h (the kernel writes its lengths
 * and flags back), its name, control buffer and iovecs. */
static int hdrReaches(struct agent_area *a, u64 h)
{
	u64 m[7];
	if (!peek(a, m, sizeof m, h))
		return 1;
	return reaches(a, h, sizeof m) || reaches(a, m[0], (u32)m[1]) || reaches(a, m[4], m[5]) || iovsReach(a, m[2], m[3]);
}

/* vecReaches says, for a call that lists its output buffers in memory,
 * whether one reaches an armed page: only then does memtrap bounce it
 * (the filter traps them all); 1 for any other call. */
static int vecReaches(struct agent_area *a, long nr, const long *x)
{
	switch (nr) {
	case SYS_readv:
	case SYS_preadv:
	case SYS_preadv2:
	case SYS_process_vm_readv:
		return iovsReach(a, (u64)x[1], (u64)x[2]);
	case SYS_recvmsg:
		return hdrReaches(a, (u64)x[1]);
	case SYS_recvmmsg: {
		u64 n = (u64)x[2] < MAX_IOV ? (u64)x[2] : MAX_IOV;
		if (reaches(a, (u64)x[4], 16))
			return 1;
		for (u64 i = 0; i < n; i++)
			if (hdrReaches(a, (u64)x[1] + 64 * i) || reaches(a, (u64)x[1] + 64 * i + 56, 4))
				return 1;
		return 0;
	}
	}
	return 1;
}

/* onsys runs a system call the filter trapped for a pointer argument
 * near an armed page: with the output buffers memtrap says to move
 * bounced to a scratch mapping, memtrap told when it is done. */
static void onsys(struct agent_area *a, int sig, void *si, void *uc)
{
	u64 *g = (u64 *)((char *)uc + UC_GREGS);
	int err = *(int *)((char *)si + 4), code = *(int *)((char *)si + 8);
	if (a->magic != AGENT_MAGIC || code != SYS_SECCOMP || err != AGENT_TRAP_DATA) {
		chain(a, &a->oldsys, sig, si, uc);
		return;
	}
	long nr = *(int *)((char *)si + 24);
	long args[6] = {(long)g[REG_RDI], (long)g[REG_RSI], (long)g[REG_RDX], (long)g[REG_R10], (long)g[REG_R8], (long)g[REG_R9]};
	long res;
	if (unmasked(a, nr, args, uc, &res) || mm(a, nr, args, &res, g[REG_RIP], uc)) {
		g[REG_RAX] = (u64)res;
		return;
	}
	long call[6];
	for (int i = 0; i < 6; i++)
		call[i] = args[i];
	/* A call's temporary mask (ppoll, pselect6, epoll_pwait) without
	 * SIGSEGV and SIGSYS: a handler that runs while it waits runs with
	 * it. The copies live until the call returns. */
	u64 tmpmask;
	struct { u64 ss, len; } tmpsel;
	int mi = nr == SYS_ppoll ? 3 : nr == SYS_epoll_pwait || nr == SYS_epoll_pwait2 ? 4 : nr == SYS_pselect6 ? 5 : -1;
	if (mi == 5 && args[5]) {
		if (peek(a, &tmpsel, 16, (u64)args[5]) && tmpsel.len == 8 && peek(a, &tmpmask, 8, tmpsel.ss)) {
			tmpmask &= ~NEVER;
			tmpsel.ss = (u64)&tmpmask;
			call[5] = (long)&tmpsel;
		}
	} else if (mi > 0 && args[mi] && args[mi + 1] == 8 && peek(a, &tmpmask, 8, (u64)args[mi])) {
		tmpmask &= ~NEVER;
		call[mi] = (long)&tmpmask;
	}
	u64 pc = g[REG_RIP], size = 0;
	u32 nout = 0;
	struct agent_bounce out[AGENT_BOUNCES];
	if (__atomic_load_n(&a->gone, __ATOMIC_ACQUIRE) ||
	    forked(a)) {
		/* memtrap let go, or a forked child: the pages are the
		 * target's own, the call runs as it is. */
		release(a);
	} else if (__atomic_load_n(&a->served, __ATOMIC_ACQUIRE) && vecReaches(a, nr, args)) {
		struct agent_request *q = post(a, pc, AGENT_REQ_KERNEL, uc, 0, 0);
		if (q) {
			if (q->result == 0 && q->nout <= AGENT_BOUNCES) {
				size = q->size;
				nout = q->nout;
				for (u32 k = 0; k < nout; k++)
					out[k] = q->out[k];
			}
			done(q);
		}
	}
	long scratch = 0;
	int settle = nout > 0;
	if (size) {
		scratch = sys6(SYS_mmap, 0, (long)size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
		if (scratch < 0 && scratch > -4096)
			size = 0, settle = 0;
	}
	for (u32 k = 0; settle && k < nout; k++) {
		/* Copied in, twice: the kernel may read the first copy, which
		 * it writes; memtrap compares it with the second, which it
		 * does not (scratch's upper half), for the bytes it changed.
		 * An unreadable buffer runs the call as it is, to fail as it
		 * would have. A SET bounce copies nothing: memtrap made the
		 * memory its argument points at. */
		long n = (long)out[k].size, at = scratch + (long)out[k].off;
		int set = out[k].flags & AGENT_BOUNCE_SET;
		if (out[k].arg > 5 ||
		    (!set && (!size || out[k].off + out[k].size > size / 2 ||
			      sys6(SYS_pread64, a->memfd, at, n, args[out[k].arg], 0, 0) != n ||
			      sys6(SYS_pread64, a->memfd, at + (long)(size / 2), n, args[out[k].arg], 0, 0) != n))) {
			if (size)
				sys4(SYS_munmap, scratch, (long)size, 0, 0);
			size = 0, settle = 0;
			for (u32 j = 0; j < k; j++)
				call[out[j].arg] = args[out[j].arg];
			break;
		}
		call[out[k].arg] = set ? (long)out[k].off : at;
	}
	/* The call runs with the thread's own mask (a signal may interrupt
	 * it, as without memtrap), the handler's back after it. */
	u64 mask = *(u64 *)((char *)uc + UC_SIGMASK) & ~NEVER, all = ~NEVER;
	sys4(SYS_rt_sigprocmask, SIG_SETMASK, (long)&mask, 0, 8);
	long r = sysargs(nr, call);
	sys4(SYS_rt_sigprocmask, SIG_SETMASK, (long)&all, 0, 8);
	if (settle) {
		struct agent_request *q = post(a, pc, AGENT_REQ_KERNEL_DONE, uc, (u64)scratch, r);
		if (q)
			done(q);
	}
	if (size)
		sys4(SYS_munmap, scratch, (long)size, 0, 0);
	g[REG_RAX] = (u64)r;
}

__attribute__((used)) void agent_handler(int sig, void *si, void *uc)
{
	struct agent_area *a = &agent_area;
	if (sig == SIGSYS) {
		onsys(a, sig, si, uc);
		return;
	}
	u64 *g = (u64 *)((char *)uc + UC_GREGS);
	if (g[REG_RIP] == (u64)copy_insn) {
		/* copy read past what is mapped: it stops there. */
		g[REG_RIP] = (u64)copy_stop;
		return;
	}
	int code = *(int *)((char *)si + 8);
	u64 fault = *(u64 *)((char *)si + 16);
	u32 page = a->magic == AGENT_MAGIC && code == SEGV_ACCERR ? armed(a, fault) : 0;
	if (!page) {
		chain(a, &a->old, sig, si, uc);
		return;
	}
	if (!(a->prots[page - 1] & PROT_WRITE) || (a->prots[page - 1] & AGENT_DISARMED)) {
		/* The target's own protection now (it made the page
		 * read-only, or unmapped it): the fault is its own. */
		chain(a, &a->old, sig, si, uc);
		return;
	}
	if (forked(a)) {
		/* A forked child gets its pages back, as the page engine
		 * lets a child it does not follow go, and the store runs
		 * again. */
		release(a);
		return;
	}
	if (__atomic_load_n(&a->gone, __ATOMIC_ACQUIRE)) {
		release(a); /* memtrap is gone: the store runs again */
		return;
	}
	u64 pc = g[REG_RIP];
	int served = __atomic_load_n(&a->served, __ATOMIC_ACQUIRE);
	struct agent_recipe *r = recipe(a, pc);
	if (!r && served && ask(a, pc, AGENT_REQ_RECIPE, uc))
		r = recipe(a, pc);
	/* No recipe (a full table) or none that the agent can follow:
	 * memtrap does the store. */
	if ((!r || r->width == 0) && served && ask(a, pc, AGENT_REQ_COMPLETE, uc))
		return; /* memtrap did it, in the frame */
	if (__atomic_load_n(&a->gone, __ATOMIC_ACQUIRE))
		return; /* the pages are the target's again: the store runs again */
	if (!r || r->width == 0) {
		__atomic_add_fetch(&a->misses, 1, __ATOMIC_RELAXED);
		chain(a, &a->old, sig, si, uc);
		return;
	}
	u64 ea = (u64)r->disp;
	if (r->base == AGENT_RIP)
		ea += pc + r->len;
	else if (r->base != AGENT_NOREG)
		ea += g[r->base];
	if (r->index != AGENT_NOREG)
		ea += g[r->index] * r->scale;
	u32 w = r->width;
	if (fault < ea || fault >= ea + w) {
		/* Not the store the recipe says: memtrap's to settle. */
		__atomic_add_fetch(&a->misses, 1, __ATOMIC_RELAXED);
		chain(a, &a->old, sig, si, uc);
		return;
	}
	u64 val = (r->src == AGENT_SRC_IMM ? r->imm : g[r->reg]) & widthMask(w);
	u64 efl = g[REG_EFL];
	lock(a);
	/* A full ring waits for memtrap: nothing is dropped. */
	for (;;) {
		u64 tail = __atomic_load_n(&a->tail, __ATOMIC_ACQUIRE);
		if (a->head - tail < AGENT_RING)
			break;
		struct { long s, ns; } ts = {0, 1000000};
		sys4(SYS_futex, (long)&a->tail, FUTEX_WAIT, (long)(u32)tail, (long)&ts);
		if (orphaned(a)) {
			unlock(a);
			return; /* the store runs again, on the target's page */
		}
	}
	u64 old = load(ea, w);
	if (r->op != AGENT_OP_MOV)
		val = alu(r->op, old, val, w, &efl);
	if (sys6(SYS_pwrite64, a->memfd, (long)&val, w, (long)ea, 0, 0) != (long)w) {
		unlock(a);
		__atomic_add_fetch(&a->misses, 1, __ATOMIC_RELAXED);
		chain(a, &a->old, sig, si, uc);
		return;
	}
	u64 seq = a->head;
	struct agent_record *rec = &a->ring[seq & (AGENT_RING - 1)];
	rec->seq = seq;
	rec->tid = (u32)sys4(SYS_gettid, 0, 0, 0, 0);
	rec->width = w;
	rec->pc = pc;
	rec->addr = ea;
	rec->old = old;
	rec->new = val;
	for (int i = 0; i < AGENT_NGREG; i++)
		rec->gregs[i] = g[i];
	/* The stack, from the red zone up, as far as it is mapped. */
	copy(rec->stack, (const void *)(g[REG_RSP] - AGENT_REDZONE), AGENT_STACK);
	__atomic_store_n(&a->head, seq + 1, __ATOMIC_RELEASE);
	unlock(a);
	if (__atomic_load_n(&a->waiting, __ATOMIC_ACQUIRE))
		sys4(SYS_futex, (long)&a->head, FUTEX_WAKE, 1, 0);
	g[REG_EFL] = efl;
	g[REG_RIP] = pc + r->len;
}
