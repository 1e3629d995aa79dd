/* A program that traces its own child, as a debugger, strace or a test
 * harness does. With "traceme" the child asks to be traced
 * (PTRACE_TRACEME) and stops; with "seize" the parent seizes the running
 * child (PTRACE_SEIZE) and interrupts it. Either way the parent sees the
 * stop, resumes the child and detaches, and the child reads with readv
 * (a call memtrap's syscall filter always stops) and exits with a status
 * that says how that went. The parent stores to `value` three times and
 * prints what it saw. With "exec" first (exec traceme, exec seize) it
 * stores 9 to `value` and executes itself with the rest: the watch moves
 * to the new image. */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/ptrace.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <unistd.h>

volatile long value;

static int child_reads(void)
{
	char buf[64];
	struct iovec iov = {buf, sizeof buf};
	int fd = open("/dev/zero", O_RDONLY);
	ssize_t n = readv(fd, &iov, 1);
	if (n != (ssize_t)sizeof buf) {
		fprintf(stderr, "child: readv: %zd (%s)\n", n, strerror(errno));
		return 3;
	}
	return 7;
}

int main(int argc, char **argv)
{
	if (argc > 2 && strcmp(argv[1], "exec") == 0) {
		value = 9;
		fflush(stdout);
		execl("/proc/self/exe", argv[0], argv[2], (char *)NULL);
		return 1;
	}
	int seize = argc > 1 && strcmp(argv[1], "seize") == 0;
	int go[2];
	if (pipe(go) != 0)
		return 1;
	value = 1;
	pid_t pid = fork();
	if (pid == 0) {
		if (!seize) {
			if (ptrace(PTRACE_TRACEME, 0, 0, 0) != 0) {
				fprintf(stderr, "child: PTRACE_TRACEME: %s\n", strerror(errno));
				_exit(2);
			}
			raise(SIGSTOP);
		} else {
			char c;
			/* Wait until seized: the parent writes once it has. */
			if (read(go[0], &c, 1) != 1)
				_exit(4);
		}
		_exit(child_reads());
	}
	value = 2;
	int st;
	if (seize) {
		if (ptrace(PTRACE_SEIZE, pid, 0, 0) != 0) {
			printf("PTRACE_SEIZE: %s\n", strerror(errno));
			return 1;
		}
		if (ptrace(PTRACE_INTERRUPT, pid, 0, 0) != 0) {
			printf("PTRACE_INTERRUPT: %s\n", strerror(errno));
			return 1;
		}
	}
	if (waitpid(pid, &st, 0) != pid || !WIFSTOPPED(st)) {
		printf("no stop: status %#x\n", st);
		return 1;
	}
	printf("child stopped by %s\n", seize ? "the interrupt" : "SIGSTOP");
	if (ptrace(PTRACE_DETACH, pid, 0, 0) != 0) {
		printf("PTRACE_DETACH: %s\n", strerror(errno));
		return 1;
	}
	if (seize && write(go[1], "x", 1) != 1)
		return 1;
	if (waitpid(pid, &st, 0) != pid) {
		printf("waitpid: %s\n", strerror(errno));
		return 1;
	}
	if (!WIFEXITED(st)) {
		printf("child ended with status %#x\n", st);
		return 1;
	}
	value = 3;
	printf("child exited %d\n", WEXITSTATUS(st));
	return 0;
}
