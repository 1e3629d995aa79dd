/* Sets up an io_uring (and uses it for nothing): memtrap must say, once,
 * that it does not follow io_uring. Prints whether the setup worked. */
#include <linux/io_uring.h>
#include <stdio.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

int main(void)
{
	struct io_uring_params p;
	memset(&p, 0, sizeof p);
	long fd = syscall(__NR_io_uring_setup, 4, &p);
	printf("io_uring set up: %d\n", fd >= 0);
	return 0;
}
