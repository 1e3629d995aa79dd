/* A PID namespace whose processes crash: the parent enters a new PID
 * namespace (unshare, as root), its child is that namespace's init (pid 1)
 * and forks a grandchild that dies of SIGSEGV; the init reaps it and then,
 * with "initcrash", dies of SIGSEGV itself (the kernel lets a namespace's
 * init die of a fault it cannot handle), else exits with a status that
 * says how the grandchild ended. Prints what the parent saw. Exits 3
 * where the namespace cannot be made (not root). */
#define _GNU_SOURCE
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <sys/wait.h>
#include <unistd.h>

volatile long value;

int main(int argc, char **argv)
{
	int initcrash = argc > 1;
	value = 1;
	if (unshare(CLONE_NEWPID) != 0) {
		perror("unshare");
		return 3;
	}
	fflush(stdout);
	pid_t init = fork();
	if (init == 0) {
		pid_t g = fork();
		if (g == 0)
			*(volatile int *)0 = 1;
		int st;
		waitpid(g, &st, 0);
		if (initcrash)
			*(volatile int *)0 = 2;
		_exit(WIFSIGNALED(st) ? 100 + WTERMSIG(st) : 1);
	}
	int st;
	waitpid(init, &st, 0);
	value = 2;
	if (WIFSIGNALED(st))
		printf("init killed by signal %d\n", WTERMSIG(st));
	else
		printf("init exited %d\n", WEXITSTATUS(st));
	return 0;
}
