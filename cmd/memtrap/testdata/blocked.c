/* Threads that block SIGSEGV while they write watched memory (fast_test.go):
 * a worker that blocks every signal, as servers' workers do; a SIGUSR1
 * handler whose mask is full; the main thread blocking SIGSEGV alone; a
 * handler run while ppoll waits with a mask that blocks SIGSEGV. A
 * write fault with SIGSEGV blocked would kill the process: memtrap keeps
 * it unblocked, which the worker's look at its mask shows. */
#define _GNU_SOURCE
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <unistd.h>
long counter;
static void onusr1(int s) { (void)s; counter += 100; }
static void onusr2(int s) { (void)s; counter += 1000; }
static void *worker(void *a) {
	sigset_t all; sigfillset(&all);
	pthread_sigmask(SIG_BLOCK, &all, 0);
	for (int i = 0; i < 1000; i++) counter++;
	sigset_t back; pthread_sigmask(SIG_BLOCK, 0, &back);
	printf("worker: SIGSEGV blocked %d, SIGUSR1 blocked %d\n", sigismember(&back, SIGSEGV), sigismember(&back, SIGUSR1));
	return a;
}
int main(void) {
	struct sigaction sa = {0}; sa.sa_handler = onusr1; sigfillset(&sa.sa_mask); sigaction(SIGUSR1, &sa, 0);
	pthread_t t; pthread_create(&t, 0, worker, 0); pthread_join(t, 0);
	raise(SIGUSR1);
	sigset_t m; sigemptyset(&m); sigaddset(&m, SIGSEGV); sigprocmask(SIG_BLOCK, &m, 0);
	counter++;
	/* A handler run while ppoll waits, with ppoll's mask: all but SIGUSR2. */
	struct sigaction sa2 = {0}; sa2.sa_handler = onusr2; sigaction(SIGUSR2, &sa2, 0);
	sigset_t u2; sigemptyset(&u2); sigaddset(&u2, SIGUSR2); sigprocmask(SIG_BLOCK, &u2, 0);
	raise(SIGUSR2);
	sigset_t wait; sigfillset(&wait); sigdelset(&wait, SIGUSR2);
	struct timespec ts = {5, 0};
	int r = ppoll(0, 0, &ts, &wait);
	printf("ppoll %d (%s)\n", r, r < 0 && errno == EINTR ? "EINTR" : "?");
	printf("counter %ld\n", counter);
	return 0;
}
