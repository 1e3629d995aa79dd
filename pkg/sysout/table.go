package sysout

import (
	"encoding/binary"
	"sort"

	"golang.org/x/sys/unix"
)

// Reader reads the target's memory. A call's sizes sometimes live there
// (a socklen_t behind a pointer), and a vector call's buffers always do.
type Reader interface {
	ReadMemory(addr uint64, b []byte) error
}

// Output is one buffer a call may write: Size bytes at Addr, whose pointer
// the call got in argument Arg (-1: the pointer is not an argument, it is
// listed in memory).
type Output struct {
	Arg  int
	Addr uint64
	Size uint64
}

// End is one past the buffer's last byte.
func (o Output) End() uint64 { return o.Addr + o.Size }

// Lookup returns the call numbered nr if it writes memory through its
// pointer arguments.
func Lookup(nr int) (Call, bool) {
	c, ok := table[nr]
	return c, ok
}

// Numbers lists the calls Lookup knows, in order.
func Numbers() []int {
	nrs := make([]int, 0, len(table))
	for nr := range table {
		nrs = append(nrs, nr)
	}
	sort.Ints(nrs)
	return nrs
}

// PointerArgs lists the arguments holding the call's output pointers.
func (c Call) PointerArgs() []int {
	out := make([]int, len(c.outs))
	for i, o := range c.outs {
		out[i] = o.ptr
	}
	return out
}

// Outputs lists what the call may write, given its arguments: one Output
// per pointer argument, Size 0 where it writes nothing (a null pointer, a
// zero length, an ioctl request whose size is not known).
func (c Call) Outputs(args *[6]uint64, mem Reader) []Output {
	read32 := func(addr uint64) uint32 {
		var b [4]byte
		if mem.ReadMemory(addr, b[:]) != nil {
			return 0
		}
		return binary.LittleEndian.Uint32(b[:])
	}
	out := make([]Output, len(c.outs))
	for i, o := range c.outs {
		out[i] = Output{Arg: o.ptr, Addr: args[o.ptr]}
		if out[i].Addr != 0 {
			out[i].Size = o.size(args, read32)
		}
	}
	return out
}

// outArg is one output buffer of a syscall: the pointer in argument ptr,
// its size from the arguments (and, for some, from memory).
type outArg struct {
	ptr  int
	size func(a *[6]uint64, read func(addr uint64) uint32) uint64
}

// Call is a system call that writes user memory through pointer
// arguments.
type Call struct {
	Name string
	outs []outArg
}

func fixed(n uint64) func(*[6]uint64, func(uint64) uint32) uint64 {
	return func(*[6]uint64, func(uint64) uint32) uint64 { return n }
}

func argSize(i int, mul uint64) func(*[6]uint64, func(uint64) uint32) uint64 {
	return func(a *[6]uint64, _ func(uint64) uint32) uint64 { return a[i] * mul }
}

// lenAt: a socklen_t the argument i points to.
func lenAt(i int) func(*[6]uint64, func(uint64) uint32) uint64 {
	return func(a *[6]uint64, read func(uint64) uint32) uint64 {
		if a[i] == 0 {
			return 0
		}
		return uint64(read(a[i]))
	}
}

func fdSetSize(a *[6]uint64, _ func(uint64) uint32) uint64 { return (a[0] + 63) / 64 * 8 }

// sysTable lists the x86-64 syscalls that write user memory through a
// pointer argument, with the size they may write.
var table = map[int]Call{
	unix.SYS_READ:              {"read", []outArg{{1, argSize(2, 1)}}},
	unix.SYS_PREAD64:           {"pread64", []outArg{{1, argSize(2, 1)}}},
	unix.SYS_RECVFROM:          {"recvfrom", []outArg{{1, argSize(2, 1)}, {4, lenAt(5)}, {5, fixed(4)}}},
	unix.SYS_GETRANDOM:         {"getrandom", []outArg{{0, argSize(1, 1)}}},
	unix.SYS_WAIT4:             {"wait4", []outArg{{1, fixed(4)}, {3, fixed(144)}}},
	unix.SYS_WAITID:            {"waitid", []outArg{{2, fixed(128)}, {4, fixed(144)}}},
	unix.SYS_EPOLL_WAIT:        {"epoll_wait", []outArg{{1, argSize(2, 12)}}},
	unix.SYS_EPOLL_PWAIT:       {"epoll_pwait", []outArg{{1, argSize(2, 12)}}},
	unix.SYS_EPOLL_PWAIT2:      {"epoll_pwait2", []outArg{{1, argSize(2, 12)}}},
	unix.SYS_POLL:              {"poll", []outArg{{0, argSize(1, 8)}}},
	unix.SYS_PPOLL:             {"ppoll", []outArg{{0, argSize(1, 8)}, {2, fixed(16)}}},
	unix.SYS_SELECT:            {"select", []outArg{{1, fdSetSize}, {2, fdSetSize}, {3, fdSetSize}, {4, fixed(16)}}},
	unix.SYS_PSELECT6:          {"pselect6", []outArg{{1, fdSetSize}, {2, fdSetSize}, {3, fdSetSize}, {4, fixed(16)}}},
	unix.SYS_NANOSLEEP:         {"nanosleep", []outArg{{1, fixed(16)}}},
	unix.SYS_CLOCK_NANOSLEEP:   {"clock_nanosleep", []outArg{{3, fixed(16)}}},
	unix.SYS_ACCEPT:            {"accept", []outArg{{1, lenAt(2)}, {2, fixed(4)}}},
	unix.SYS_ACCEPT4:           {"accept4", []outArg{{1, lenAt(2)}, {2, fixed(4)}}},
	unix.SYS_FSTAT:             {"fstat", []outArg{{1, fixed(144)}}},
	unix.SYS_STAT:              {"stat", []outArg{{1, fixed(144)}}},
	unix.SYS_LSTAT:             {"lstat", []outArg{{1, fixed(144)}}},
	unix.SYS_NEWFSTATAT:        {"newfstatat", []outArg{{2, fixed(144)}}},
	unix.SYS_STATX:             {"statx", []outArg{{4, fixed(256)}}},
	unix.SYS_STATFS:            {"statfs", []outArg{{1, fixed(120)}}},
	unix.SYS_FSTATFS:           {"fstatfs", []outArg{{1, fixed(120)}}},
	unix.SYS_CLOCK_GETTIME:     {"clock_gettime", []outArg{{1, fixed(16)}}},
	unix.SYS_CLOCK_GETRES:      {"clock_getres", []outArg{{1, fixed(16)}}},
	unix.SYS_GETTIMEOFDAY:      {"gettimeofday", []outArg{{0, fixed(16)}, {1, fixed(8)}}},
	unix.SYS_TIME:              {"time", []outArg{{0, fixed(8)}}},
	unix.SYS_GETDENTS64:        {"getdents64", []outArg{{1, argSize(2, 1)}}},
	unix.SYS_GETDENTS:          {"getdents", []outArg{{1, argSize(2, 1)}}},
	unix.SYS_PIPE:              {"pipe", []outArg{{0, fixed(8)}}},
	unix.SYS_PIPE2:             {"pipe2", []outArg{{0, fixed(8)}}},
	unix.SYS_SOCKETPAIR:        {"socketpair", []outArg{{3, fixed(8)}}},
	unix.SYS_UNAME:             {"uname", []outArg{{0, fixed(390)}}},
	unix.SYS_SYSINFO:           {"sysinfo", []outArg{{0, fixed(112)}}},
	unix.SYS_GETRUSAGE:         {"getrusage", []outArg{{1, fixed(144)}}},
	unix.SYS_TIMES:             {"times", []outArg{{0, fixed(32)}}},
	unix.SYS_GETCWD:            {"getcwd", []outArg{{0, argSize(1, 1)}}},
	unix.SYS_READLINK:          {"readlink", []outArg{{1, argSize(2, 1)}}},
	unix.SYS_READLINKAT:        {"readlinkat", []outArg{{2, argSize(3, 1)}}},
	unix.SYS_RT_SIGPROCMASK:    {"rt_sigprocmask", []outArg{{2, argSize(3, 1)}}},
	unix.SYS_RT_SIGACTION:      {"rt_sigaction", []outArg{{2, fixed(32)}}},
	unix.SYS_RT_SIGPENDING:     {"rt_sigpending", []outArg{{0, argSize(1, 1)}}},
	unix.SYS_SIGALTSTACK:       {"sigaltstack", []outArg{{1, fixed(24)}}},
	unix.SYS_GETITIMER:         {"getitimer", []outArg{{1, fixed(32)}}},
	unix.SYS_SETITIMER:         {"setitimer", []outArg{{2, fixed(32)}}},
	unix.SYS_PRLIMIT64:         {"prlimit64", []outArg{{3, fixed(16)}}},
	unix.SYS_GETRLIMIT:         {"getrlimit", []outArg{{1, fixed(16)}}},
	unix.SYS_SCHED_GETAFFINITY: {"sched_getaffinity", []outArg{{2, argSize(1, 1)}}},
	unix.SYS_GETSOCKNAME:       {"getsockname", []outArg{{1, lenAt(2)}, {2, fixed(4)}}},
	unix.SYS_GETPEERNAME:       {"getpeername", []outArg{{1, lenAt(2)}, {2, fixed(4)}}},
	unix.SYS_GETSOCKOPT:        {"getsockopt", []outArg{{3, lenAt(4)}, {4, fixed(4)}}},
	unix.SYS_GETRESUID:         {"getresuid", []outArg{{0, fixed(4)}, {1, fixed(4)}, {2, fixed(4)}}},
	unix.SYS_GETRESGID:         {"getresgid", []outArg{{0, fixed(4)}, {1, fixed(4)}, {2, fixed(4)}}},
	unix.SYS_GETGROUPS:         {"getgroups", []outArg{{1, argSize(0, 4)}}},
	unix.SYS_CAPGET:            {"capget", []outArg{{1, fixed(24)}}},
	unix.SYS_MINCORE:           {"mincore", []outArg{{2, func(a *[6]uint64, _ func(uint64) uint32) uint64 { return (a[1] + 4095) / 4096 }}}},
	unix.SYS_SCHED_GETPARAM:    {"sched_getparam", []outArg{{1, fixed(4)}}},
	unix.SYS_TIMER_GETTIME:     {"timer_gettime", []outArg{{1, fixed(32)}}},
	unix.SYS_TIMERFD_GETTIME:   {"timerfd_gettime", []outArg{{1, fixed(32)}}},
	unix.SYS_IOCTL:             {"ioctl", []outArg{{2, ioctlOut}}},
	unix.SYS_MSGRCV:            {"msgrcv", []outArg{{1, func(a *[6]uint64, _ func(uint64) uint32) uint64 { return a[2] + 8 }}}},
	unix.SYS_MQ_TIMEDRECEIVE:   {"mq_timedreceive", []outArg{{1, argSize(2, 1)}, {3, fixed(4)}}},
	unix.SYS_GETXATTR:          {"getxattr", []outArg{{2, argSize(3, 1)}}},
	unix.SYS_LGETXATTR:         {"lgetxattr", []outArg{{2, argSize(3, 1)}}},
	unix.SYS_FGETXATTR:         {"fgetxattr", []outArg{{2, argSize(3, 1)}}},
	unix.SYS_LISTXATTR:         {"listxattr", []outArg{{1, argSize(2, 1)}}},
	unix.SYS_LLISTXATTR:        {"llistxattr", []outArg{{1, argSize(2, 1)}}},
	unix.SYS_FLISTXATTR:        {"flistxattr", []outArg{{1, argSize(2, 1)}}},
	unix.SYS_GETCPU:            {"getcpu", []outArg{{0, fixed(4)}, {1, fixed(4)}}},
	unix.SYS_SCHED_GETATTR:     {"sched_getattr", []outArg{{1, argSize(2, 1)}}},
	unix.SYS_IO_GETEVENTS:      {"io_getevents", []outArg{{3, argSize(2, 32)}}},
	unix.SYS_GET_ROBUST_LIST:   {"get_robust_list", []outArg{{1, fixed(8)}, {2, fixed(8)}}},
	unix.SYS_CLOCK_ADJTIME:     {"clock_adjtime", []outArg{{1, fixed(208)}}},
	unix.SYS_ADJTIMEX:          {"adjtimex", []outArg{{0, fixed(208)}}},
}

// ioctlOut is what an ioctl may write at its third argument: the size
// encoded in the request for _IOR/_IOWR requests, a table for the classic
// terminal and socket ones, nothing for the rest (not followed).
func ioctlOut(a *[6]uint64, _ func(uint64) uint32) uint64 {
	req := uint32(a[1])
	if dir := req >> 30; dir&2 != 0 { // _IOC_READ: the kernel writes
		return uint64(req >> 16 & 0x3fff)
	}
	switch req {
	case unix.TCGETS:
		return 36 // struct termios (the kernel's, without speeds)
	case unix.TIOCGWINSZ:
		return 8
	case 0x541b /* FIONREAD */, unix.TIOCOUTQ, unix.TIOCGPGRP, unix.TIOCGSID, unix.TIOCGETD, unix.TIOCMGET, unix.SIOCATMARK:
		return 4
	case unix.SIOCGIFCONF:
		return 16 // struct ifconf (its buffer is not followed)
	case unix.SIOCGIFNAME, unix.SIOCGIFFLAGS, unix.SIOCGIFADDR, unix.SIOCGIFINDEX, unix.SIOCGIFMTU, unix.SIOCGIFHWADDR, unix.SIOCGIFNETMASK, unix.SIOCGIFBRDADDR:
		return 40 // struct ifreq
	}
	return 0
}
