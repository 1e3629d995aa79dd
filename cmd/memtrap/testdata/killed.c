/* Stores to `value`, then dies of SIGABRT. */
#include <stdlib.h>

volatile long value;

int main(void)
{
	value = 42;
	abort();
}
