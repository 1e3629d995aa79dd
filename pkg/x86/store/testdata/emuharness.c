/* The harness the emulator's differential test runs instructions in: a
 * code page and data pages at fixed addresses, the vector registers loaded
 * with a known pattern, then int3. From there the test owns the thread: it
 * writes one instruction (and an int3) at a time into the code page, sets
 * the registers and lets it run; no C code runs again. */
#include <stdint.h>
#include <string.h>
#include <sys/mman.h>

#define CODE 0x10000000UL
#define DATA 0x20000000UL
#define DATA_LEN (4 * 4096)

/* zmm/ymm/xmm r gets pat[64r...], mm i pat[2048+8i...], k i kvals[i]. */
static unsigned char pat[2048 + 64 + 64] __attribute__((aligned(64)));
static const unsigned long long kvals[8] = {
	0, ~0ULL, 1, 0x8000000000000001ULL, 0x5555555555555555ULL,
	0x0f0f0f0f0f0f0f0fULL, 0xfffffffffffffffeULL, 0x123456789abcdef1ULL,
};

#define LOADS(insn, reg)                                                        \
	insn " " reg "0, [rax]\n\t" insn " " reg "1, [rax+64]\n\t"              \
	insn " " reg "2, [rax+128]\n\t" insn " " reg "3, [rax+192]\n\t"         \
	insn " " reg "4, [rax+256]\n\t" insn " " reg "5, [rax+320]\n\t"         \
	insn " " reg "6, [rax+384]\n\t" insn " " reg "7, [rax+448]\n\t"         \
	insn " " reg "8, [rax+512]\n\t" insn " " reg "9, [rax+576]\n\t"         \
	insn " " reg "10, [rax+640]\n\t" insn " " reg "11, [rax+704]\n\t"       \
	insn " " reg "12, [rax+768]\n\t" insn " " reg "13, [rax+832]\n\t"       \
	insn " " reg "14, [rax+896]\n\t" insn " " reg "15, [rax+960]\n\t"
#define LOADS_HI(insn, reg)                                                     \
	insn " " reg "16, [rax+1024]\n\t" insn " " reg "17, [rax+1088]\n\t"     \
	insn " " reg "18, [rax+1152]\n\t" insn " " reg "19, [rax+1216]\n\t"     \
	insn " " reg "20, [rax+1280]\n\t" insn " " reg "21, [rax+1344]\n\t"     \
	insn " " reg "22, [rax+1408]\n\t" insn " " reg "23, [rax+1472]\n\t"     \
	insn " " reg "24, [rax+1536]\n\t" insn " " reg "25, [rax+1600]\n\t"     \
	insn " " reg "26, [rax+1664]\n\t" insn " " reg "27, [rax+1728]\n\t"     \
	insn " " reg "28, [rax+1792]\n\t" insn " " reg "29, [rax+1856]\n\t"     \
	insn " " reg "30, [rax+1920]\n\t" insn " " reg "31, [rax+1984]\n\t"
#define MMX                                                                     \
	"movq mm0, [rax+2048]\n\tmovq mm1, [rax+2056]\n\t"                      \
	"movq mm2, [rax+2064]\n\tmovq mm3, [rax+2072]\n\t"                      \
	"movq mm4, [rax+2080]\n\tmovq mm5, [rax+2088]\n\t"                      \
	"movq mm6, [rax+2096]\n\tmovq mm7, [rax+2104]\n\t"
#define KREGS                                                                   \
	"kmovq k1, [rax+2120]\n\tkmovq k2, [rax+2128]\n\tkmovq k3, [rax+2136]\n\t" \
	"kmovq k4, [rax+2144]\n\tkmovq k5, [rax+2152]\n\tkmovq k6, [rax+2160]\n\t" \
	"kmovq k7, [rax+2168]\n\t"

int main(void)
{
	if (mmap((void *)CODE, 4096, PROT_READ | PROT_WRITE | PROT_EXEC,
		 MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, -1, 0) != (void *)CODE)
		return 1;
	if (mmap((void *)DATA, DATA_LEN, PROT_READ | PROT_WRITE,
		 MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, -1, 0) != (void *)DATA)
		return 2;
	for (unsigned i = 0; i < sizeof pat; i++)
		pat[i] = (unsigned char)((uint32_t)i * 2654435761u >> 24);
	memcpy(pat + 2112, kvals, sizeof kvals);
	__builtin_cpu_init();
	if (__builtin_cpu_supports("avx512bw"))
		__asm__ volatile(".intel_syntax noprefix\n\t" LOADS("vmovdqu64", "zmm")
				 LOADS_HI("vmovdqu64", "zmm") MMX KREGS "int3\n\tud2\n\t.att_syntax"
				 : : "a"(pat));
	else if (__builtin_cpu_supports("avx"))
		__asm__ volatile(".intel_syntax noprefix\n\t" LOADS("vmovdqu", "ymm")
				 MMX "int3\n\tud2\n\t.att_syntax" : : "a"(pat));
	else
		__asm__ volatile(".intel_syntax noprefix\n\t" LOADS("movdqu", "xmm")
				 MMX "int3\n\tud2\n\t.att_syntax" : : "a"(pat));
	return 3;
}
