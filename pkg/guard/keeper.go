package guard

import (
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"runtime"
	"strconv"
	"syscall"

	"github.com/memtrap/memtrap/internal/seccompnotify"
	"golang.org/x/sys/unix"
)

// The keeper of a launched target's syscall filter.
//
// The filter memtrap installs in a launched target cannot be removed, and
// its children inherit it. Its calls wait for an answer from the filter's
// listener, which memtrap holds and answers ("run it as it is") for every
// process it does not trace (tracer/notify.go). Once memtrap is gone, a
// filter without a listener makes those calls fail with ENOSYS, in the
// children the target left running (a daemon, a server's workers) or, if
// memtrap was killed, in every child it did not follow.
//
// So memtrap hands a copy of the listener to a keeper: the memtrap binary
// again, run as "memtrap __keeper PID" in a session of its own (Ctrl-C and
// a kill of memtrap's process group do not reach it), with no terminal
// streams. It sleeps until memtrap (PID) has exited, then answers every
// call "run it as it is" until no process carries the filter any more (the
// listener reports POLLHUP), and exits. It touches no process. A call
// memtrap had received and not yet answered when it died is answered
// first: memtrap records each call's id as it receives it in a page it
// shares with the keeper (seccompnotify.Ledger).

// KeeperCommand is the hidden subcommand that runs a keeper: the memtrap
// binary calls KeeperMain when its first argument is KeeperCommand.
const KeeperCommand = "__keeper"

// keeperFd is the listener's descriptor in the keeper, ledgerFd its
// ledger's.
const (
	keeperFd = 3
	ledgerFd = 4
)

// StartKeeper starts a keeper of the listener fd (a seccomp user-
// notification descriptor) for this process, and returns once it runs.
// ledger is the memfd of the listener's seccompnotify.Ledger (-1: none).
func StartKeeper(fd, ledger int) error {
	exe, err := os.Executable()
	if err != nil {
		return fmt.Errorf("starting a keeper of the syscall filter: %w", err)
	}
	dup, err := unix.Dup(fd)
	if err != nil {
		return fmt.Errorf("starting a keeper of the syscall filter: %w", err)
	}
	f := os.NewFile(uintptr(dup), "listener")
	files := []*os.File{f}
	if ledger >= 0 {
		if ldup, err := unix.Dup(ledger); err == nil {
			files = append(files, os.NewFile(uintptr(ldup), "ledger"))
		}
	}
	started := make(chan error, 1)
	go func() {
		// A child of this thread only: the ptrace thread waits for its
		// own tracees and children (__WNOTHREAD), and must not see it.
		runtime.LockOSThread()
		args := []string{KeeperCommand, strconv.Itoa(os.Getpid())}
		if len(files) > 1 {
			args = append(args, strconv.Itoa(ledgerFd))
		}
		cmd := exec.Command(exe, args...)
		cmd.ExtraFiles = files
		cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
		err := cmd.Start()
		for _, f := range files {
			f.Close()
		}
		started <- err
		if err == nil {
			_ = cmd.Wait()
		}
	}()
	if err := <-started; err != nil {
		return fmt.Errorf("starting a keeper of the syscall filter: %w", err)
	}
	return nil
}

// KeeperMain is the keeper: args are KeeperCommand's arguments (memtrap's
// pid, and ledgerFd when that descriptor is the listener's ledger), errw
// its stderr. It returns its exit code.
func KeeperMain(args []string, errw io.Writer) int {
	signal.Ignore(unix.SIGINT, unix.SIGHUP, unix.SIGPIPE, unix.SIGQUIT, unix.SIGTSTP, unix.SIGTTIN, unix.SIGTTOU)
	pid, ledger := 0, -1
	if len(args) >= 1 && len(args) <= 2 {
		pid, _ = strconv.Atoi(args[0])
	}
	if len(args) == 2 && args[1] == strconv.Itoa(ledgerFd) {
		ledger = ledgerFd
	}
	if pid <= 0 {
		fmt.Fprintf(errw, "memtrap: %s is memtrap's own: it takes memtrap's pid and a listener as descriptor %d\n", KeeperCommand, keeperFd)
		return 2
	}
	var st unix.Stat_t
	if err := unix.Fstat(keeperFd, &st); err != nil {
		fmt.Fprintf(errw, "memtrap: %s: no listener as descriptor %d\n", KeeperCommand, keeperFd)
		return 2
	}
	// memtrap answers while it lives; a pidfd taken when it has exited
	// already, or is another process by now, is as good as readable.
	if pidfd, err := unix.PidfdOpen(pid, 0); err == nil && os.Getppid() == pid {
		fds := []unix.PollFd{{Fd: int32(pidfd), Events: unix.POLLIN}}
		for {
			if _, err := unix.Poll(fds, -1); err != unix.EINTR {
				break
			}
		}
		unix.Close(pidfd)
	}
	if ledger >= 0 {
		seccompnotify.AnswerLeft(keeperFd, ledger)
		unix.Close(ledger)
	}
	serveOrphans(keeperFd)
	return 0
}

// serveOrphans answers every call stopped by the listener's filter "run it
// as it is" until no task carries the filter.
func serveOrphans(fd int) {
	seccompnotify.Serve(fd, nil, func(r *seccompnotify.Request) { _ = seccompnotify.Continue(fd, r.ID()) })
}
