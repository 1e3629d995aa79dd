/* A store ten frames deep. */
volatile long value;

__attribute__((noinline)) void level(int n)
{
	if (n == 0)
		value = 1;
	else
		level(n - 1);
	__asm__ volatile("" ::: "memory");
}

int main(void)
{
	level(8);
	return 0;
}
