/* For TestGuardianMidCall: malloc(40)/free pairs, each block's first word
 * written with the pair's number and read back into a sum, a 50 us sleep
 * every 50 pairs, until its stdin closes (looked at every 50 pairs). Prints
 * "ready" once it runs, "pairs N" every 1000 pairs, then "done N SUM" and
 * exits with status 7. A thread sent back into its code with wrong
 * registers shows: a return with the wrong value, a sum that is not
 * N(N-1)/2, an early exit (status 0 from main's own return). */
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

int main(void)
{
	long sum = 0, n;
	printf("ready\n");
	fflush(stdout);
	for (n = 0;; n++) {
		long *p = malloc(40);
		if (!p)
			return 3;
		p[0] = n;
		sum += p[0];
		free(p);
		if (n % 50 == 0) {
			struct pollfd in = {0, POLLIN, 0};
			char c;
			if (poll(&in, 1, 0) > 0 && read(0, &c, 1) <= 0)
				break;
			usleep(50);
		}
		if (n % 1000 == 999) {
			printf("pairs %ld\n", n + 1);
			fflush(stdout);
		}
	}
	printf("done %ld %ld\n", n + 1, sum);
	return 7;
}
