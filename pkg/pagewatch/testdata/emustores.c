/* Stores of every kind the emulator handles, into watched memory: glibc's
 * memset and memcpy (whatever variant it picks on this CPU), REP string
 * ops, read-modify-writes of a counter, plain and vector moves. Prints what
 * it computed, flags included, so a wrong emulation shows in the output
 * too. Built -no-pie -fno-builtin: `buf` and `counter` by link-time
 * address, and every memset/memcpy a call into libc. */
#include <stdint.h>
#include <stdio.h>
#include <string.h>

unsigned char buf[3 * 4096] __attribute__((aligned(4096)));
uint64_t counter __attribute__((aligned(4096)));
unsigned char src[8192];

static uint64_t sum(const unsigned char *p, size_t n)
{
	uint64_t h = 1469598103934665603ULL;
	for (size_t i = 0; i < n; i++)
		h = (h ^ p[i]) * 1099511628211ULL;
	return h;
}

/* flags after an instruction on the counter: CF, PF, AF, ZF, SF, OF. */
#define RMW(insn)                                                               \
	({                                                                      \
		uint64_t f;                                                     \
		__asm__ volatile(insn "\n\tpushfq\n\tpopq %0"                   \
				 : "=r"(f), "+m"(counter) : : "cc");            \
		f & 0x8d5;                                                      \
	})
/* The same with a register source, %2. */
#define RMWR(insn, v)                                                           \
	({                                                                      \
		uint64_t f;                                                     \
		__asm__ volatile(insn "\n\tpushfq\n\tpopq %0"                   \
				 : "=r"(f), "+m"(counter) : "q"(v) : "cc");     \
		f & 0x8d5;                                                      \
	})

int main(void)
{
	for (int i = 0; i < (int)sizeof src; i++)
		src[i] = (unsigned char)(i * 7 + 1);

	/* memset: small, medium, page-crossing, large (REP STOSB or vectors). */
	static const size_t sets[][2] = {{1, 10}, {100, 100}, {4000, 200}, {7, 33}, {0, 5000}, {300, 64}, {4090, 40}};
	for (int i = 0; i < 7; i++)
		memset(buf + sets[i][0], 0x11 * (i + 1), sets[i][1]);
	printf("memset %016llx\n", (unsigned long long)sum(buf, sizeof buf));

	/* memcpy and an overlapping memmove. */
	static const size_t cps[][3] = {{0, 0, 16}, {50, 3, 31}, {4000, 100, 300}, {1, 0, 4500}, {8000, 17, 129}};
	for (int i = 0; i < 5; i++)
		memcpy(buf + cps[i][0], src + cps[i][1], cps[i][2]);
	memmove(buf + 10, buf, 1000);
	memmove(buf, buf + 33, 2000);
	printf("memcpy %016llx\n", (unsigned long long)sum(buf, sizeof buf));

	/* REP string ops by hand, both directions. */
	{
		void *d = buf + 5;
		size_t n = 3000;
		__asm__ volatile("rep stosb" : "+D"(d), "+c"(n) : "a"(0x5a) : "memory");
		d = buf + 8 * 700;
		n = 600;
		__asm__ volatile("std\n\trep stosq\n\tcld" : "+D"(d), "+c"(n) : "a"(0x0102030405060708ULL) : "memory");
		const void *s = src;
		d = buf + 9000;
		n = 250;
		__asm__ volatile("rep movsl" : "+D"(d), "+S"(s), "+c"(n) : : "memory");
		d = buf + 12;
		__asm__ volatile("stosw" : "+D"(d) : "a"(0xbeef) : "memory");
	}
	printf("rep %016llx\n", (unsigned long long)sum(buf, sizeof buf));

	/* Read-modify-writes of the counter, flags printed. */
	uint64_t fl = 0;
	counter = 0x7ffffffffffffffeULL;
	fl = fl * 31 + RMW("addq $1, %1");
	fl = fl * 31 + RMW("incq %1");
	fl = fl * 31 + RMW("addb $0x80, %1");
	fl = fl * 31 + RMW("subw $0x1235, %1");
	fl = fl * 31 + RMW("stc\n\tadcl $-1, %1");
	fl = fl * 31 + RMW("stc\n\tsbbq $5, %1");
	fl = fl * 31 + RMW("negq %1");
	fl = fl * 31 + RMW("notl %1");
	fl = fl * 31 + RMW("decb %1");
	fl = fl * 31 + RMWR("xorq %2, %1", 0x8000000000000001ULL);
	fl = fl * 31 + RMW("andw $0xff0f, %1");
	fl = fl * 31 + RMWR("orb %b2, %1", 0x81);
	fl = fl * 31 + RMWR("subl %k2, %1", 0x7fffffff);
	for (int i = 0; i < 50; i++)
		__asm__ volatile("addq %1, %0" : "+m"(counter) : "r"((uint64_t)i * 0x9e3779b97f4a7c15ULL) : "cc");
	printf("rmw %016llx flags %llx\n", (unsigned long long)counter, (unsigned long long)fl);

	/* Plain moves of each width, MOVBE, SETcc, and vector stores. */
	{
		volatile uint8_t *b8 = buf + 20;
		volatile uint16_t *b16 = (volatile uint16_t *)(buf + 4095);
		volatile uint32_t *b32 = (volatile uint32_t *)(buf + 40);
		volatile uint64_t *b64 = (volatile uint64_t *)(buf + 8188);
		for (int i = 0; i < 20; i++) {
			*b8 = (uint8_t)i;
			*b16 = (uint16_t)(i * 0x101);
			*b32 = (uint32_t)i * 0x01010101u;
			*b64 = (uint64_t)i << 40 | 0xfeed;
		}
		uint32_t v = 0x11223344;
		__asm__ volatile("movbe %1, %0" : "=m"(*(uint32_t *)(buf + 60)) : "r"(v));
		__asm__ volatile("cmp $1, %1\n\tsetl %0" : "=m"(buf[64]) : "r"(v) : "cc");
		__asm__ volatile("movdqu %%xmm0, %0" : "=m"(*(char(*)[16])(buf + 4088)) : : );
		__asm__ volatile("movaps %%xmm1, %0" : "=m"(*(char(*)[16])(buf + 128)) : : );
	}
	printf("mov %016llx\n", (unsigned long long)sum(buf, sizeof buf));
	return 0;
}
