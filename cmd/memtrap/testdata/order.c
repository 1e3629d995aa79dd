/* For reports on a terminal: `val` is set to 1..30, and the program
 * prints "after N" after each; then a 16-byte store changes 5 bytes of
 * `buf` ("hello, world!!!!" -> "hello, WORLD!!!!"). */
#include <emmintrin.h>
#include <stdio.h>

volatile long val;
char buf[16] = "hello, world!!!!";

int main(void)
{
	for (int i = 1; i <= 30; i++) {
		val = i;
		printf("after %d\n", i);
		fflush(stdout);
	}
	_mm_storeu_si128((__m128i *)buf, _mm_loadu_si128((const __m128i *)"hello, WORLD!!!!"));
	printf("buf=%.16s\n", buf);
	return 0;
}
