/* Signals of every kind pending at once while memtrap completes trapped
 * writes; each handler writes the watched `value` too (a trap inside a
 * handler). Handlers run on an alternate stack whose last page can be
 * watched as well (altstk+61440), which sends every delivery through
 * memtrap's signal-frame path. It prints what the handlers saw: counts,
 * the order of real-time signals per queue, and the order of one burst.
 *  1. another thread sends SIGUSR1 (kill), SIGUSR2 (tgkill) and three
 *     of each of two real-time signals (sigqueue and pthread_sigqueue)
 *     while this one writes `value` in a loop; ROUNDS (argv[1]) times,
 *     waiting for each round to be handled, so that nothing merges;
 *  2. the same kinds sent while blocked, then unblocked at once: the
 *     kernel's own order of delivery, handlers nested in each other. */
#define _GNU_SOURCE
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

volatile long value __attribute__((aligned(4096)));
static char pad[4096] __attribute__((used));
static char altstk[65536] __attribute__((aligned(4096)));

#define RT0 (SIGRTMIN)
#define RT1 (SIGRTMIN + 1)
static atomic_int handled, usr1, usr2, rt0, rt1, misorder;
/* next[s][q]: the sequence number expected next of real-time signal s
 * sent to queue q (0: the process's, 1: the thread's) */
static int next[2][2];
static char order[64];
static atomic_int norder;
static int logging;

static void on_sig(int sig, siginfo_t *si, void *uc)
{
	(void)uc;
	char c = '?';
	value = sig;
	if (sig == SIGUSR1) {
		usr1++;
		c = '1';
	} else if (sig == SIGUSR2) {
		usr2++;
		c = '2';
	} else if (sig == RT0 || sig == RT1) {
		int r = sig == RT1, v = si->si_value.sival_int;
		if (v / 2 != next[r][v & 1])
			misorder++;
		next[r][v & 1] = v / 2 + 1;
		if (r)
			rt1++;
		else
			rt0++;
		c = (r ? 'A' : 'a') + v % 26;
	}
	if (logging) {
		int i = atomic_fetch_add(&norder, 1);
		if (i < (int)sizeof order - 1)
			order[i] = c;
	}
	value = -sig;
	handled++;
}

static pid_t mtid;
static pthread_t mthread;
static atomic_int done;
static int rounds;

/* the k-th real-time signal sig sent to a queue: its value is 2k+queue */
static void sendq(int sig, int k, int thread)
{
	union sigval sv = {.sival_int = 2 * k + thread};
	if (thread)
		pthread_sigqueue(mthread, sig, sv);
	else
		sigqueue(getpid(), sig, sv);
}

static void *flood(void *a)
{
	(void)a;
	sigset_t all;
	sigemptyset(&all);
	sigaddset(&all, SIGUSR1);
	sigaddset(&all, SIGUSR2);
	sigaddset(&all, RT0);
	sigaddset(&all, RT1);
	pthread_sigmask(SIG_BLOCK, &all, NULL); /* the process's go to main */
	for (int i = 0; i < rounds; i++) {
		int want = handled + 8;
		kill(getpid(), SIGUSR1);
		syscall(SYS_tgkill, getpid(), mtid, SIGUSR2);
		sendq(RT0, 2 * i, 0);
		sendq(RT0, i, 1);
		sendq(RT0, 2 * i + 1, 0);
		sendq(RT1, 2 * i, 1);
		sendq(RT1, i, 0);
		sendq(RT1, 2 * i + 1, 1);
		while (handled < want)
			sched_yield();
	}
	done = 1;
	return NULL;
}

int main(int argc, char **argv)
{
	rounds = argc > 1 ? atoi(argv[1]) : 100;
	stack_t ss = {.ss_sp = altstk, .ss_size = sizeof altstk};
	sigaltstack(&ss, NULL);
	struct sigaction sa;
	memset(&sa, 0, sizeof sa);
	sa.sa_sigaction = on_sig;
	sa.sa_flags = SA_SIGINFO | SA_ONSTACK | SA_RESTART;
	int sigs[] = {SIGUSR1, SIGUSR2, RT0, RT1};
	for (int i = 0; i < 4; i++)
		sigaction(sigs[i], &sa, NULL);
	mtid = syscall(SYS_gettid);
	mthread = pthread_self();

	pthread_t th;
	pthread_create(&th, NULL, flood, NULL);
	long i = 0;
	while (!done)
		value = i++;
	pthread_join(th, NULL);
	printf("flood: usr1 %d usr2 %d rt0 %d rt1 %d misorder %d\n", (int)usr1, (int)usr2, (int)rt0, (int)rt1, (int)misorder);

	sigset_t set, old;
	sigemptyset(&set);
	for (int i = 0; i < 4; i++)
		sigaddset(&set, sigs[i]);
	sigprocmask(SIG_BLOCK, &set, &old);
	memset(next, 0, sizeof next);
	logging = 1;
	sendq(RT1, 0, 1);
	syscall(SYS_tgkill, getpid(), mtid, SIGUSR2);
	sendq(RT0, 0, 0);
	sendq(RT0, 0, 1);
	kill(getpid(), SIGUSR1);
	sendq(RT1, 0, 0);
	sendq(RT0, 1, 0);
	sendq(RT1, 1, 1);
	value = 7; /* a trapped write with all of them pending */
	sigprocmask(SIG_SETMASK, &old, NULL);
	value = 8;
	order[norder] = 0;
	printf("burst: order %s misorder %d\n", order, (int)misorder);
	return 0;
}
