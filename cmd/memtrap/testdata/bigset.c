/* REP string operations of 4 MiB over a watched page: STOSB forwards,
 * MOVSQ forwards, and an overlapping MOVSB backwards (DF set), as big
 * memset/memcpy/memmove implementations do. */
#include <stdio.h>
#include <string.h>

#define N (4 << 20)
static char big[N] __attribute__((aligned(4096)));
static char src[N] __attribute__((aligned(4096)));

static void rep_stosb(void *d, int c, unsigned long n)
{
	__asm__ volatile("rep stosb" : "+D"(d), "+c"(n) : "a"(c) : "memory");
}

static void rep_movsq(void *d, const void *s, unsigned long n)
{
	__asm__ volatile("rep movsq" : "+D"(d), "+S"(s), "+c"(n) : : "memory");
}

static void rep_movsb_back(void *d, const void *s, unsigned long n)
{
	d = (char *)d + n - 1;
	s = (const char *)s + n - 1;
	__asm__ volatile("std; rep movsb; cld" : "+D"(d), "+S"(s), "+c"(n) : : "memory");
}

int main(void)
{
	rep_stosb(src, 'x', N);
	for (long i = 0; i < N; i += 4096)
		src[i] = (char)('a' + i / 4096 % 26);
	rep_stosb(big, 'b', N);
	rep_movsq(big, src, N / 8);
	rep_movsb_back(big + 8, big, N - 8); /* overlapping: copied backwards */
	long sum = 0;
	for (long i = 0; i < N; i += 4096)
		sum += big[i] + big[i + 8];
	printf("%c%c%c sum %ld\n", big[0], big[N / 2 + 8], big[N - 1], sum);
	return 0;
}
