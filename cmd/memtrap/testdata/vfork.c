/* A vfork child writing the watched counter (fast_test.go): it shares the
 * memory, so its write is the target's own, reported with its tid. */
#include <stdio.h>
#include <unistd.h>
#include <sys/wait.h>
long counter;
int main(void) {
	counter = 1;
	pid_t p = vfork();
	if (p == 0) { counter = 2; _exit(0); }
	waitpid(p, 0, 0);
	counter = 3;
	printf("counter %ld\n", counter);
	return 0;
}
