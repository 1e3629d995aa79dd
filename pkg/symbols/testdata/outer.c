/*
 * outer.c: parameters of outer frames kept in registers across a call,
 * for TestParamsOuterFrames. Built with -O2 -g.
 *
 *   main -> middle(keep, pass) -> leaf(x) -> stop()
 *
 * noipa keeps gcc from inlining or cloning these and from knowing which
 * registers a callee leaves alone. middle needs keep after its call, so
 * keeps it in a callee-saved register (rbx), which leaf saves on its stack
 * to keep x there across the call to stop: middle's keep comes back from
 * leaf's save slot, leaf's x from the register stop left alone.
 *
 *   main -> scratch(k, y) -> tiny(y)
 *
 * tiny is visible to gcc's -fipa-ra, which then knows that it clobbers
 * only rax: scratch keeps k in a scratch register across the call, and
 * its DWARF says so. An unwinder cannot know what a callee did not
 * clobber, so k is unknown in scratch's frame.
 */
#include <stdio.h>

#define NOIPA __attribute__((noipa))
#define NOINLINE __attribute__((noinline, noclone))

volatile long sink;

NOIPA void stop(void) { sink++; }

NOIPA long leaf(long x)
{
	stop();
	return x * 3;
}

NOIPA long middle(long keep, long pass)
{
	long r = leaf(pass);
	return r + keep;
}

NOINLINE long tiny(long y)
{
	sink = y;
	return y + 1;
}

NOIPA long scratch(long k, long y)
{
	long r = tiny(y);
	return r * k;
}

int main(int argc, char **argv)
{
	(void)argv;
	printf("%ld\n", middle(0x1234567 + argc, 41 + argc));
	printf("%ld\n", scratch(0x7654321 + argc, 6 + argc));
	return 0;
}
