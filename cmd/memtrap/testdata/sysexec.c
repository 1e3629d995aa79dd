/* Runs a shell by system(3) between two stores to a watched array: the
 * shell (a new program in a child, which inherits the target's syscall
 * filter) blocks signals, sets handlers and reads and writes as it likes,
 * and must run as without memtrap. */
#include <stdio.h>
#include <stdlib.h>

long value[8];

int main(void)
{
	value[0] = 1;
	fflush(stdout);
	int r = system("trap 'echo usr1' USR1; kill -USR1 $$; read x < /dev/null; echo child ok");
	value[1] = 2;
	printf("system %d\n", r);
	return 0;
}
