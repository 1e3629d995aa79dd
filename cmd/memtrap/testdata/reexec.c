/* Stores to `value`, then execs itself; the new image stores twice more. */
#include <stdio.h>
#include <unistd.h>

volatile long value;

int main(int argc, char **argv)
{
	if (argc == 1) {
		value = 1;
		fflush(stdout);
		execl("/proc/self/exe", argv[0], "again", (char *)NULL);
		return 1;
	}
	value = 2;
	value = 3;
	printf("value %ld\n", value);
	return 0;
}
