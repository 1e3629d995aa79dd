/* Two signals pending at once, the second arriving while memtrap works on
 * the first, with handlers that touch no watched page:
 *  1. a thread sends SIGUSR1 and then SIGUSR2 to its own process while
 *     the main thread, which alone takes them, sleeps; the main thread
 *     waits for both (at most 5 s: then it says which one never came);
 *  2. a new thread blocks both, sends both to itself and waits for them
 *     in one sigsuspend: both handlers run in it, nested (SIGUSR2's
 *     first), each with the mask sigsuspend set up plus the signals
 *     delivered so far, and sigsuspend gives the blocked mask back. */
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

volatile long value __attribute__((aligned(4096)));
static char pad[4096] __attribute__((used));
static volatile sig_atomic_t n1, n2;
/* phase 2: each handler's signal and the mask it ran with, as "2[12]" */
static char seen[32];
static volatile int nseen, logging;

static int blocked(int sig)
{
	sigset_t m;
	pthread_sigmask(SIG_BLOCK, NULL, &m);
	return sigismember(&m, sig);
}

static void on_usr(int sig)
{
	if (sig == SIGUSR1)
		n1++;
	else
		n2++;
	if (logging && nseen < (int)sizeof seen - 6) {
		seen[nseen++] = sig == SIGUSR1 ? '1' : '2';
		seen[nseen++] = '[';
		if (blocked(SIGUSR1))
			seen[nseen++] = '1';
		if (blocked(SIGUSR2))
			seen[nseen++] = '2';
		seen[nseen++] = ']';
	}
}

static void *sender(void *a)
{
	sigset_t s;
	sigemptyset(&s);
	sigaddset(&s, SIGUSR1);
	sigaddset(&s, SIGUSR2);
	pthread_sigmask(SIG_BLOCK, &s, NULL);
	usleep(20000);
	kill(getpid(), SIGUSR1);
	kill(getpid(), SIGUSR2);
	return a;
}

static void *suspender(void *a)
{
	sigset_t s, old;
	sigemptyset(&s);
	sigaddset(&s, SIGUSR1);
	sigaddset(&s, SIGUSR2);
	pthread_sigmask(SIG_BLOCK, &s, &old);
	pthread_kill(pthread_self(), SIGUSR1);
	pthread_kill(pthread_self(), SIGUSR2);
	sigdelset(&old, SIGUSR1);
	sigdelset(&old, SIGUSR2);
	logging = 1;
	sigsuspend(&old);
	logging = 0;
	printf("suspend: handlers %s, blocked again %d\n", seen, blocked(SIGUSR1) && blocked(SIGUSR2));
	return a;
}

int main(void)
{
	signal(SIGUSR1, on_usr);
	signal(SIGUSR2, on_usr);
	value = 1; /* trapped: the pages are armed */
	pthread_t t;
	pthread_create(&t, NULL, sender, NULL);
	for (int i = 0; i < 500 && !(n1 && n2); i++)
		usleep(10000);
	pthread_join(t, NULL);
	printf("pair: usr1 %d usr2 %d\n", (int)n1, (int)n2);
	n1 = n2 = 0;
	value = 2;
	pthread_create(&t, NULL, suspender, NULL);
	pthread_join(t, NULL);
	return 0;
}
