/* The kernel writes into watched memory: read(2) from a pipe into `buf`,
 * fstat(2) into `st`, then a plain store. */
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

char buf[64];
struct stat st;

int main(void)
{
	int p[2];
	if (pipe(p) != 0)
		return 1;
	write(p[1], "hello", 5);
	ssize_t n = read(p[0], buf, sizeof buf);
	int r = fstat(p[0], &st);
	buf[0] = 'H';
	printf("read %zd bytes: %s, fstat %d\n", n, buf, r);
	return 0;
}
