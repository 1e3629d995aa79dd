// Two variables on pages of their own, stored in turn: a test adds and
// removes watched regions while this runs.
#include <stdio.h>

volatile long a __attribute__((aligned(4096)));
char pad[4096];
volatile long b __attribute__((aligned(4096)));

int main(void) {
	for (long i = 0; i < 10; i++) {
		a = i;
		b = i;
	}
	printf("a=%ld b=%ld\n", a, b);
	return 0;
}
