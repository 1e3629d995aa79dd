/* Forks 50 children, each writing `value` twice, the parent once per child;
 * half are reaped at once, the rest at the end. Waits for a line first. */
#include <stdio.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>
volatile long value;
int main(void) {
	char line[8];
	printf("ready\n"); fflush(stdout);
	fgets(line, sizeof line, stdin);
	for (int i = 0; i < 50; i++) {
		pid_t c = fork();
		if (c == 0) { value = 100 + i; usleep(20000); value = 200 + i; _exit(i % 7); }
		value = i;
		usleep(5000);
		if (i % 2) { int st; waitpid(c, &st, 0); }
	}
	while (wait(NULL) > 0) ;
	printf("done %ld\n", value);
	return 0;
}
