/* Stops itself with SIGSTOP between two stores; someone must SIGCONT it. */
#include <signal.h>
#include <stdio.h>

volatile long value;

int main(void)
{
	value = 1;
	printf("stopping\n");
	fflush(stdout);
	raise(SIGSTOP);
	value = 2;
	printf("continued\n");
	return 0;
}
