/* Forks a child that writes the watched counter 2000 times, then executes
 * itself again ("execd") while the child writes on; the new image writes
 * counter 5 times and waits for the child. Prints what both saw. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

volatile long counter;

int main(int argc, char **argv)
{
	if (argc > 1 && strcmp(argv[1], "execd") == 0) {
		for (int i = 1; i <= 5; i++)
			counter = i;
		int st;
		pid_t c = wait(&st);
		printf("execd counter %ld, child %s status %d\n", counter, c > 0 ? "reaped" : "lost", WIFEXITED(st) ? WEXITSTATUS(st) : -WTERMSIG(st));
		return 0;
	}
	pid_t pid = fork();
	if (pid == 0) {
		for (long i = 1; i <= 2000; i++) {
			counter = i;
			if (i % 10 == 0)
				usleep(20);
		}
		_exit(counter == 2000 ? 3 : 4);
	}
	usleep(500);
	execl("/proc/self/exe", argv[0], "execd", (char *)NULL);
	return 1;
}
