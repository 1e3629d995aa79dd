// Package seccompnotify is the listener's side of seccomp's user
// notification (linux/seccomp.h): the calls a SECCOMP_RET_USER_NOTIF filter
// stopped, received one at a time, and their answers. memtrap's three
// listeners use it: the tracer's (calls of traced threads), the keeper's
// (calls after memtrap is gone) and the fast engine's (the target's
// rt_sigaction for SIGSEGV).
package seccompnotify

import (
	"encoding/binary"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Size is struct seccomp_notif's; respSize struct seccomp_notif_resp's.
const (
	Size     = 80
	respSize = 24
)

// Request is a struct seccomp_notif: the stopped call of one task.
type Request [Size]byte

// ID names the call in its answer.
func (r *Request) ID() uint64 { return binary.LittleEndian.Uint64(r[0:]) }

// Tid is the calling task, in the listener's pid namespace.
func (r *Request) Tid() int { return int(binary.LittleEndian.Uint32(r[8:])) }

// Nr is the system call's number.
func (r *Request) Nr() int { return int(int32(binary.LittleEndian.Uint32(r[16:]))) }

// IP is the address after the call's `syscall` instruction.
func (r *Request) IP() uint64 { return binary.LittleEndian.Uint64(r[24:]) }

// Arg is argument i (0-5).
func (r *Request) Arg(i int) uint64 { return binary.LittleEndian.Uint64(r[32+8*i:]) }

// Serve receives the calls stopped for listener fd and gives each to
// answer, until no task carries the filter or fd is closed. A call whose
// task gave up waiting (a signal, its end) before it was received is
// skipped. Each call's id goes to l (nil: nowhere) as it is received.
func Serve(fd int, l *Ledger, answer func(*Request)) {
	var req Request
	fds := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
	for {
		if _, err := unix.Poll(fds, -1); err != nil && err != unix.EINTR {
			return
		}
		if fds[0].Revents&unix.POLLIN == 0 {
			if fds[0].Revents&(unix.POLLHUP|unix.POLLERR|unix.POLLNVAL) != 0 {
				return
			}
			continue
		}
		clear(req[:])
		if err := ioctl(fd, unix.SECCOMP_IOCTL_NOTIF_RECV, unsafe.Pointer(&req[0])); err != nil {
			if err == unix.EBADF {
				return
			}
			continue
		}
		l.record(req.ID())
		answer(&req)
	}
}

// Answer answers call id: the value it returns, or the error (errno > 0)
// it fails with.
func Answer(fd int, id uint64, val int64, errno unix.Errno) error {
	return send(fd, id, val, -int32(errno), 0)
}

// Continue answers call id "run it as it is".
func Continue(fd int, id uint64) error {
	return send(fd, id, 0, 0, unix.SECCOMP_USER_NOTIF_FLAG_CONTINUE)
}

// Fail answers call id with a raw negative error, which may be one of the
// kernel's own (-ERESTARTNOINTR).
func Fail(fd int, id uint64, neg int32) error { return send(fd, id, 0, neg, 0) }

func send(fd int, id uint64, val int64, neg int32, flags uint32) error {
	var resp [respSize]byte
	binary.LittleEndian.PutUint64(resp[0:], id)
	binary.LittleEndian.PutUint64(resp[8:], uint64(val))
	binary.LittleEndian.PutUint32(resp[16:], uint32(neg))
	binary.LittleEndian.PutUint32(resp[20:], flags)
	return ioctl(fd, unix.SECCOMP_IOCTL_NOTIF_SEND, unsafe.Pointer(&resp[0]))
}

func ioctl(fd int, req uint, arg unsafe.Pointer) error {
	_, _, e := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), uintptr(req), uintptr(arg))
	if e != 0 {
		return e
	}
	return nil
}
