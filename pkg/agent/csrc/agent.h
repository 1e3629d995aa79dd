/* The layout memtrap and its in-target agent share (agent.c). The agent's
 * code is mapped at some address A; this area follows it, at A +
 * AGENT_CODE_SPAN, in memory that memtrap maps too. Every field is written
 * by one side only, except lock (both take it) and the ring's indices.
 * agent.go mirrors it; TestLayout checks the offsets. */
#ifndef MEMTRAP_AGENT_H
#define MEMTRAP_AGENT_H

typedef unsigned char u8;
typedef unsigned int u32;
typedef int s32;
typedef unsigned long u64;
typedef long s64;

#define AGENT_MAGIC 0x746e656761746d6dUL /* "mmtagent" */
#define AGENT_VERSION 10
#define AGENT_CODE_SPAN 0x2000 /* code, then the area */
#define AGENT_PAGES 1024       /* armed pages */
#define AGENT_RECIPES 4096     /* a power of two: open addressing by pc */
#define AGENT_RING 1024        /* records, a power of two */
#define AGENT_REDZONE 128      /* the ABI's, below rsp: a leaf's locals */
#define AGENT_STACK 4096       /* stack bytes copied per record, from rsp
                                * less AGENT_REDZONE:
                                * enough to unwind the usual 8 frames */
#define AGENT_NGREG 23         /* ucontext's gregs */

/* A store the agent completes: what memtrap's decoder says of one pc. */
struct agent_recipe {
	u64 pc;    /* 0: an empty slot */
	u8 len;    /* the instruction's length */
	u8 width;  /* bytes stored: 1, 2, 4 or 8; 0: not the agent's store */
	u8 src;    /* AGENT_SRC_REG or AGENT_SRC_IMM */
	u8 reg;    /* the source register, a gregs index (REG_RAX...) */
	u8 base;   /* gregs index, AGENT_NOREG, or AGENT_RIP (RIP-relative) */
	u8 index;  /* gregs index or AGENT_NOREG */
	u8 scale;  /* 1, 2, 4 or 8 */
	u8 op;     /* AGENT_OP_*: the store, or the read-modify-write */
	s64 disp;
	u64 imm;   /* AGENT_SRC_IMM: the value, as wide as width */
};

/* What the store writes: the source (MOV), or the memory's value and the
 * source through an ALU op, its flags set as the CPU would (INC and DEC
 * leave CF; AND, OR and XOR clear CF, OF and AF). LOCK changes nothing:
 * every write to an armed page goes through the agent's lock. */
#define AGENT_DISARMED (1UL << 32) /* the target's protection now */
#define AGENT_DROPPED (1UL << 33)  /* unmapped or replaced: for good */

#define AGENT_OP_MOV 0
#define AGENT_OP_ADD 1
#define AGENT_OP_SUB 2
#define AGENT_OP_AND 3
#define AGENT_OP_OR 4
#define AGENT_OP_XOR 5
#define AGENT_OP_INC 6
#define AGENT_OP_DEC 7

#define AGENT_SRC_REG 1
#define AGENT_SRC_IMM 2
#define AGENT_NOREG 0xff
#define AGENT_RIP 0xfe

/* One write the agent completed, in the order the writes took effect. */
struct agent_record {
	u64 seq;
	u32 tid;
	u32 width;
	u64 pc;
	u64 addr;
	u64 old;
	u64 new;
	u64 gregs[AGENT_NGREG]; /* as the fault left them (rip: the store's) */
	u8 stack[AGENT_STACK];  /* from gregs[REG_RSP] - AGENT_REDZONE */
};

/* A thread asking memtrap for the recipe of a pc it has none for: it
 * takes a free slot (state FREE -> TAKEN), fills it, posts it (POSTED,
 * waking memtrap if it waits), and waits on state. memtrap adds the recipe
 * (width 0: a store the agent does not complete) and answers (ANSWERED,
 * waking the slot); the thread frees the slot and looks again. */
/* One output buffer of a system call moved to the agent's scratch: the
 * pointer in argument arg points size bytes at scratch + off instead.
 * With AGENT_BOUNCE_SET, argument arg is off itself, memory memtrap has
 * filled (a vector call's lists, which point at buffers of memtrap's). */
struct agent_bounce {
	u32 arg;
	u32 flags;
	u64 off;
	u64 size;
};

#define AGENT_BOUNCE_SET 1

#define AGENT_BOUNCES 4

struct agent_request {
	u64 pc;
	u32 tid;
	u32 state;
	u32 kind;   /* AGENT_REQ_* */
	u32 result; /* 0 done, else memtrap could not */
	u64 uc;     /* the thread's ucontext_t, in its signal frame */
	u64 fsbase; /* COMPLETE: the thread's FS and GS bases, which the */
	u64 gsbase; /* signal frame does not hold */
	u64 scratch; /* KERNEL_DONE: the call's scratch */
	s64 ret;     /* KERNEL_DONE: what the call returned */
	u64 size;    /* KERNEL, answered: scratch bytes (0: run it as it is) */
	u32 nout;    /* KERNEL, answered: the buffers moved there */
	u32 pad;
	struct agent_bounce out[AGENT_BOUNCES];
};

/* RECIPE asks for pc's recipe. COMPLETE, for a store the agent cannot do
 * itself (its recipe's width is 0), asks memtrap to do it from the frozen
 * signal frame: memtrap decodes and emulates it with the frame's
 * registers, writes memory and the registers after it into the frame,
 * appends the record, all under lock, and answers; the handler returns and
 * the thread goes on past the store. */
#define AGENT_REQ_RECIPE 1
#define AGENT_REQ_COMPLETE 2
/* KERNEL: a system call the filter trapped (SIGSYS) because a pointer
 * argument comes near an armed page: memtrap answers which output buffers
 * the agent moves to a scratch mapping of its own (the kernel does not
 * fault on a write-protected page, the call would fail with EFAULT); the
 * agent makes the call so, with the thread's own signal mask, then posts
 * KERNEL_DONE, and memtrap copies the bytes the kernel changed to their
 * place and records them, under lock. */
#define AGENT_REQ_KERNEL 3
#define AGENT_REQ_KERNEL_DONE 4
/* MM: the target unmapped or replaced armed pages (munmap, mremap, mmap
 * MAP_FIXED: the call trapped at uc), for memtrap to say so. */
#define AGENT_REQ_MM 5
/* MADVISE: the call trapped at uc may have changed armed pages' bytes
 * (MADV_DONTNEED zeroes an anonymous page): scratch holds, page after
 * page, the bytes before it of each armed page in its range (in the
 * area's order, dropped ones left out). The agent holds the lock for
 * memtrap, which records what changed and answers. */
#define AGENT_REQ_MADVISE 6

/* SECCOMP_RET_DATA of the filter's traps (si_errno of their SIGSYS). */
#define AGENT_TRAP_DATA 0x6d61

#define AGENT_REQUESTS 16
#define AGENT_REQ_FREE 0
#define AGENT_REQ_TAKEN 1
#define AGENT_REQ_POSTED 2
#define AGENT_REQ_ANSWERED 3

/* The kernel's struct sigaction (not libc's). */
struct agent_sigaction {
	u64 handler;
	u64 flags;
	u64 restorer;
	u64 mask;
};

struct agent_area {
	u64 magic;
	u32 version;
	s32 memfd;      /* the target's fd of /proc/self/mem */
	u32 npages;
	u32 lock;       /* 0 free, 1 taken */
	u32 waiting;    /* memtrap sleeps on head (futex): wake it */
	u32 served;     /* memtrap answers requests (else none is posted) */
	u64 pages[AGENT_PAGES]; /* armed pages (page addresses), in order */
	u64 prots[AGENT_PAGES]; /* each page's own protection (PROT_*): a
				 * forked child gets it back (agent.c); with
				 * AGENT_DISARMED, the target took the page
				 * over (mprotect, munmap...) */
	u64 head;       /* records written: the next record's seq */
	u64 tail;       /* records memtrap has taken */
	u64 misses;     /* faults on armed pages the agent did not complete */
	u64 chained;    /* faults that were not memtrap's, passed on */
	u64 asked;      /* requests posted */
	u64 pid;        /* the process whose memory memfd writes: a forked
			 * child, which shares this area and that descriptor,
			 * must not complete stores with them (agent.c) */
	u64 mpid;       /* memtrap's pid, as the target sees it */
	s32 mpidfd;     /* the target's pidfd of memtrap (-1: none) */
	u32 gone;       /* memtrap is gone or let go: the pages get their
			 * protections back, nothing is served (agent.c) */
	u64 token;      /* a word in a private page of the target's that
			 * MADV_WIPEONFORK zeroes in a forked child, nonzero
			 * here; 0: no such page (getpid tells, agent.c) */
	struct agent_sigaction old; /* the target's own SIGSEGV action */
	struct agent_sigaction oldsys; /* and its SIGSYS action */
	struct agent_request requests[AGENT_REQUESTS];
	struct agent_recipe recipes[AGENT_RECIPES];
	struct agent_record ring[AGENT_RING];
};

/* The blob's first bytes: where its entry points are. */
struct agent_header {
	u32 magic;       /* AGENT_HEADER_MAGIC */
	u32 handler;     /* offset of the SIGSEGV and SIGSYS handler (SA_SIGINFO) */
	u32 restorer;    /* offset of the sa_restorer (rt_sigreturn) */
	u32 size;        /* bytes of code */
};

#define AGENT_HEADER_MAGIC 0x6d74676eu /* "ngtm" little-endian */

#endif
