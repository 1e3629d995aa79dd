/* Loads argv[1] with dlopen and calls its plugin_bump(5). With argv[2]
 * "child", then forks a child that asks to be traced by its parent, as a
 * debugger's inferior does, and prints whether it could. */
#include <dlfcn.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/ptrace.h>
#include <sys/wait.h>
#include <unistd.h>

long loaded;

static int child(void)
{
	pid_t pid = fork();
	if (pid < 0)
		return 1;
	if (pid == 0) {
		long r = ptrace(PTRACE_TRACEME, 0, 0, 0);
		printf("traceme %s\n", r == 0 ? "ok" : strerror(errno));
		fflush(stdout);
		_exit(0);
	}
	int st;
	if (waitpid(pid, &st, 0) != pid || !WIFEXITED(st))
		return 1;
	return WEXITSTATUS(st);
}

int main(int argc, char **argv)
{
	void *h = dlopen(argv[1], RTLD_NOW);
	if (!h) {
		fprintf(stderr, "%s\n", dlerror());
		return 1;
	}
	void (*bump)(int) = (void (*)(int))dlsym(h, "plugin_bump");
	long *counter = dlsym(h, "plugin_counter");
	loaded = 1;
	bump(5);
	printf("counter %ld\n", *counter);
	fflush(stdout);
	if (argc > 2 && strcmp(argv[2], "child") == 0)
		return child();
	return 0;
}
