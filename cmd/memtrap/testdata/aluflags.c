/* Read-modify-writes of watched memory, with their flags (fast_test.go):
 * ADD, SUB, AND, OR, XOR from a register and from an immediate, INC, DEC,
 * locked and not, at every width, over edge values. It prints a hash of
 * every result and every flag the op sets (CF PF AF ZF SF OF): the same
 * however its writes are completed. */
#include <stdio.h>

unsigned long watched[8];

static const unsigned long vals[] = {
	0, 1, 2, 0xf, 0x10, 0x7f, 0x80, 0xff, 0x100, 0x7fff, 0x8000, 0xffff,
	0x7fffffff, 0x80000000, 0xffffffff, 0x100000000, 0x7fffffffffffffff,
	0x8000000000000000, 0xffffffffffffffff, 0x123456789abcdef0,
};
#define NV (sizeof vals / sizeof vals[0])
#define FLAGS 0x8d5UL

static unsigned long hash = 1469598103934665603UL;
static void mix(unsigned long v)
{
	hash ^= v;
	hash *= 1099511628211UL;
}

#define OPR(insn, sfx, T, reg)                                                  \
	for (unsigned i = 0; i < NV; i++)                                       \
		for (unsigned j = 0; j < NV; j++) {                             \
			T *m = (T *)&watched[1];                                \
			*m = (T)vals[i];                                        \
			T b = (T)vals[j];                                       \
			unsigned long f;                                        \
			__asm__ volatile(insn sfx " %2, %0\n\tpushfq\n\tpopq %1" \
					 : "+m"(*m), "=r"(f)                    \
					 : reg(b)                               \
					 : "cc");                               \
			mix(*m);                                                \
			mix(f & FLAGS);                                         \
		}

#define OPI(insn, sfx, T, imm)                                                   \
	for (unsigned i = 0; i < NV; i++) {                                      \
		T *m = (T *)&watched[2];                                         \
		*m = (T)vals[i];                                                 \
		unsigned long f;                                                 \
		__asm__ volatile(insn sfx " $" #imm ", %0\n\tpushfq\n\tpopq %1" \
				 : "+m"(*m), "=r"(f)                             \
				 :                                               \
				 : "cc");                                        \
		mix(*m);                                                         \
		mix(f & FLAGS);                                                  \
	}

#define OP1(insn, sfx, T)                                                   \
	for (unsigned i = 0; i < NV; i++) {                                 \
		T *m = (T *)&watched[3];                                    \
		*m = (T)vals[i];                                            \
		unsigned long f;                                            \
		/* CF in: INC and DEC keep it. */                           \
		__asm__ volatile("stc\n\t" insn sfx " %0\n\tpushfq\n\tpopq %1" \
				 : "+m"(*m), "=r"(f)                        \
				 :                                          \
				 : "cc");                                   \
		mix(*m);                                                    \
		mix(f & FLAGS);                                             \
	}

#define ALL(insn)                                        \
	OPR(insn, "b", unsigned char, "q")              \
	OPR(insn, "w", unsigned short, "r")             \
	OPR(insn, "l", unsigned int, "r")               \
	OPR(insn, "q", unsigned long, "r")              \
	OPI(insn, "b", unsigned char, 0x81)             \
	OPI(insn, "w", unsigned short, -3)              \
	OPI(insn, "l", unsigned int, 0x7fffffff)        \
	OPI(insn, "q", unsigned long, -1)

int main(void)
{
	ALL("add")
	ALL("sub")
	ALL("and")
	ALL("or")
	ALL("xor")
	ALL("lock add")
	ALL("lock sub")
	ALL("lock xor")
	OP1("inc", "b", unsigned char)
	OP1("inc", "l", unsigned int)
	OP1("dec", "w", unsigned short)
	OP1("dec", "q", unsigned long)
	OP1("lock inc", "q", unsigned long)
	OP1("lock dec", "l", unsigned int)
	printf("hash %016lx\n", hash);
	return 0;
}
