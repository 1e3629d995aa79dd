/* A thread reads with readv into `buf` (watched) while the main thread
 * signals it with SIGUSR1, whose handler is installed without SA_RESTART.
 * Reading /dev/zero never waits, so no read fails with EINTR natively; a
 * call that waited for memtrap's listener when the signal came had not
 * started, and must not fail either. Prints how many reads failed. */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

char buf[64] = "not read yet";
static volatile int done;
static volatile long handled;

static void on_usr1(int sig) { (void)sig; handled++; }

static void *reader(void *arg)
{
	int n = *(int *)arg, fd = open("/dev/zero", O_RDONLY), failed = 0, other = 0;
	struct iovec iov = {buf, 16};
	for (int i = 0; i < n; i++) {
		ssize_t r = readv(fd, &iov, 1);
		if (r < 0 && errno == EINTR)
			failed++;
		else if (r != 16)
			other++;
	}
	done = 1;
	printf("reads %d, EINTR %d, other %d\n", n, failed, other);
	return NULL;
}

int main(int argc, char **argv)
{
	int n = argc > 1 ? atoi(argv[1]) : 2000;
	struct sigaction sa;
	memset(&sa, 0, sizeof sa);
	sa.sa_handler = on_usr1; /* no SA_RESTART */
	sigaction(SIGUSR1, &sa, NULL);
	pthread_t t;
	pthread_create(&t, NULL, reader, &n);
	struct timespec ts = {0, 200000};
	while (!done) {
		pthread_kill(t, SIGUSR1);
		nanosleep(&ts, NULL);
	}
	pthread_join(t, NULL);
	return 0;
}
