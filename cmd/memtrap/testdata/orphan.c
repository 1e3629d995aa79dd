/* Exits at once, leaving children running: a child of its own and a
 * daemon (a double fork: the middle process exits, the grandchild starts
 * a session of its own). Both let go of the terminal's streams, as a
 * daemon does, and store to `value`; with "spin" they then run until
 * killed (the daemon sleeping, the child spinning without a system
 * call), with "brief" they exit 0.2 s later. With "late FILE" the
 * daemon waits 0.5 s (memtrap has ended by then), reads with readv, a
 * call memtrap's syscall filter stops, and writes to FILE how that went;
 * with "held FILE" it does so at once, and the target waits 2 s before it
 * exits.
 * Prints their pids. */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <errno.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

volatile long value;

static void detach_streams(void)
{
	int fd = open("/dev/null", O_RDWR);
	dup2(fd, 0);
	dup2(fd, 1);
	dup2(fd, 2);
	close(fd);
}

static void run(int spin, int sleeps)
{
	value = getpid();
	struct timespec ts = {0, 200000000};
	if (!spin) {
		nanosleep(&ts, NULL);
		_exit(0);
	}
	for (;;) {
		if (sleeps)
			nanosleep(&ts, NULL);
		value++;
	}
}

static void late(const char *path, int wait)
{
	struct timespec ts = {0, 500000000};
	if (wait)
		nanosleep(&ts, NULL);
	char buf[16];
	struct iovec iov = {buf, sizeof buf};
	int fd = open("/dev/zero", O_RDONLY);
	ssize_t n = readv(fd, &iov, 1);
	FILE *f = fopen(path, "w");
	fprintf(f, "readv %zd %s\n", n, n < 0 ? strerror(errno) : "ok");
	fclose(f);
	_exit(0);
}

int main(int argc, char **argv)
{
	int spin = argc > 1 && strcmp(argv[1], "spin") == 0;
	const char *latePath = argc > 2 && strcmp(argv[1], "late") == 0 ? argv[2] : NULL;
	const char *heldPath = argc > 2 && strcmp(argv[1], "held") == 0 ? argv[2] : NULL;
	int p[2];
	pipe(p);
	value = 1;
	pid_t child = fork();
	if (child == 0) {
		close(p[0]);
		detach_streams();
		run(spin, 0);
	}
	pid_t mid = fork();
	if (mid == 0) {
		pid_t d = fork();
		if (d == 0) {
			setsid();
			detach_streams();
			pid_t me = getpid();
			write(p[1], &me, sizeof me);
			close(p[1]);
			if (latePath || heldPath)
				late(latePath ? latePath : heldPath, latePath != NULL);
			run(spin, 1);
		}
		_exit(0);
	}
	close(p[1]);
	pid_t daemon = 0;
	read(p[0], &daemon, sizeof daemon);
	waitpid(mid, NULL, 0);
	if (heldPath) {
		struct timespec ts = {2, 0};
		nanosleep(&ts, NULL);
	}
	value = 2;
	printf("child %d daemon %d\n", (int)child, (int)daemon);
	return 0;
}
