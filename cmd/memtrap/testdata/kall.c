/* Syscalls that write into a watched struct: each must return what it
 * returns without memtrap, and be reported as a kernel write. With an
 * argument "wait", it first prints "ready" and waits for a line on stdin
 * (for attach). Then it makes N (argv[2], default 0) unrelated syscalls, to
 * measure what following syscalls costs. */
#define _GNU_SOURCE
#include <dirent.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

struct {
	char rd[8];
	char prd[8];
	char rv1[4], rv2[4];
	char msg[8];
	char from[8];
	struct stat st;
	struct timespec ts;
	int fds[2];
	int status;
	char dents[256];
	int nread;
	char mm1[8], mm2[8];
} box __attribute__((aligned(4096)));

int main(int argc, char **argv)
{
	char line[16];
	if (argc > 1 && strcmp(argv[1], "wait") == 0) {
		printf("ready\n");
		fflush(stdout);
		if (!fgets(line, sizeof line, stdin))
			return 2;
	}
	int p[2];
	pipe(p);
	write(p[1], "pipe-in!", 8);
	long r1 = read(p[0], box.rd, 8);

	int m = memfd_create("kall", 0);
	write(m, "0123456789abcdef", 16);
	long r2 = pread(m, box.prd, 8, 4);

	write(p[1], "ABCDEFGH", 8);
	struct iovec iv[2] = {{box.rv1, 4}, {box.rv2, 4}};
	long r3 = readv(p[0], iv, 2);

	int sv[2];
	socketpair(AF_UNIX, SOCK_DGRAM, 0, sv);
	send(sv[0], "datagram", 8, 0);
	struct iovec mv = {box.msg, 8};
	struct msghdr mh = {.msg_iov = &mv, .msg_iovlen = 1};
	long r4 = recvmsg(sv[1], &mh, 0);
	send(sv[0], "recvfrom", 8, 0);
	long r5 = recvfrom(sv[1], box.from, 8, 0, NULL, NULL);

	long r6 = fstat(m, &box.st);
	long r7 = syscall(SYS_clock_gettime, CLOCK_MONOTONIC, &box.ts);
	long r8 = pipe(box.fds);
	pid_t c = fork();
	if (c == 0)
		_exit(7);
	long r9 = wait4(c, &box.status, 0, NULL);
	int d = open("/", O_RDONLY | O_DIRECTORY);
	long r10 = syscall(SYS_getdents64, d, box.dents, sizeof box.dents);
	write(p[1], "abcde", 5);
	long r11 = ioctl(p[0], FIONREAD, &box.nread);
	send(sv[0], "mmsg-one", 8, 0);
	send(sv[0], "mmsg-two", 8, 0);
	struct iovec m1 = {box.mm1, 8}, m2 = {box.mm2, 8};
	struct mmsghdr mmv[2] = {{.msg_hdr = {.msg_iov = &m1, .msg_iovlen = 1}}, {.msg_hdr = {.msg_iov = &m2, .msg_iovlen = 1}}};
	long r12 = recvmmsg(sv[1], mmv, 2, 0, NULL);

	printf("read %ld %.8s pread %ld %.8s readv %ld %.4s%.4s recvmsg %ld %.8s recvfrom %ld %.8s\n",
	       r1, box.rd, r2, box.prd, r3, box.rv1, box.rv2, r4, box.msg, r5, box.from);
	printf("fstat %ld size %ld clock %ld %d pipe %ld %d wait4 %d status %d getdents %d ioctl %ld %d\nrecvmmsg %ld %u %u %.8s %.8s\n",
	       r6, (long)box.st.st_size, r7, box.ts.tv_sec > 0 || box.ts.tv_nsec > 0, r8, box.fds[1] > box.fds[0],
	       r9 == c, WEXITSTATUS(box.status), r10 > 0, r11, box.nread,
	       r12, mmv[0].msg_len, mmv[1].msg_len, box.mm1, box.mm2);

	long n = argc > 2 ? atol(argv[2]) : 0;
	char buf[8];
	for (long i = 0; i < n; i++) {
		getppid();
		write(p[1], "x", 1);
		read(p[0], buf, 1);
	}
	return 0;
}
