/* Fixture for pkg/symbols: globals of known names and sizes, aliases at one
 * address, and a function the assembler gives no size. Run with "sleep" it
 * prints the addresses it sees and waits to be inspected. */
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

int counter;           /* .bss: also defined in libdemo */
long count = 7;        /* .data */
char buffer[64];       /* .bss, for name+OFF */
long counter_total;    /* a near miss for suggestions */
char scratch[16384];   /* .bss reaching past the file's last page */
static int hidden_total;

int __impl_bump(int x) {
	hidden_total += x;
	return hidden_total * 3 + x;
}

/* Four names for one function: Lookup must say "bump". */
int bump(int) __attribute__((alias("__impl_bump")));
extern int bump_weak(int) __attribute__((weak, alias("__impl_bump")));
static int local_bump(int) __attribute__((used, alias("__impl_bump")));

/* No .size directive: st_size is 0. */
__asm__(".text\n"
	".globl zero_sized\n"
	".type zero_sized, @function\n"
	"zero_sized:\n"
	"\tnop\n\tnop\n\tnop\n\tnop\n\tnop\n\tnop\n\tnop\n\tret\n");
void zero_sized(void);

int main(int argc, char **argv) {
	counter = 0x1234567;
	memset(buffer, 'x', sizeof buffer - 1);
	count += bump(argc);
	zero_sized();
	if (argc > 1 && strcmp(argv[1], "sleep") == 0) {
		printf("counter=%p main=%p\n", (void *)&counter, (void *)main);
		fflush(stdout);
		for (;;)
			pause();
	}
	return 0;
}
