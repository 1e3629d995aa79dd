/* A forked child inherits the parent's pages, write-protected by memtrap:
 * it must not die of them. Parent: value = 1, fork, wait, value = 4.
 * Child: value = 2, value = 3, exit 5. */
#include <stdio.h>
#include <sys/wait.h>
#include <unistd.h>

volatile long value;

int main(void)
{
	value = 1;
	fflush(stdout);
	pid_t pid = fork();
	if (pid == 0) {
		value = 2;
		value = 3;
		printf("child value %ld\n", value);
		return 5;
	}
	int status;
	waitpid(pid, &status, 0);
	value = 4;
	printf("parent value %ld, child exit %d\n", value, WEXITSTATUS(status));
	return 0;
}
