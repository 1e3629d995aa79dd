/* A program that closes every descriptor but its standard ones, as daemons
 * do, and two it never opened (fast_test.go): the fast engine's agent keeps
 * its own and goes on completing the writes. */
#define _GNU_SOURCE
#include <stdio.h>
#include <unistd.h>
#include <fcntl.h>
long counter;
int main(void) {
	counter = 1;
	int r1 = close_range(3, ~0U, 0);
	int r2 = close(1000);
	int r3 = close(1001);
	counter = 2;
	int fd = open("/dev/null", O_RDONLY);
	counter = 3;
	printf("close_range %d close %d %d, next fd %d, counter %ld\n", r1, r2, r3, fd, counter);
	return 0;
}
