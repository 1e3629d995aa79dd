package fastwatch

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"runtime"
	"sync"

	"github.com/memtrap/memtrap/internal/seccompnotify"
	"github.com/memtrap/memtrap/pkg/agent"
	"github.com/memtrap/memtrap/pkg/tracer"
	"golang.org/x/sys/unix"
)

// The agent is the target's SIGSEGV handler, and the target must not see
// it: its own rt_sigaction(SIGSEGV) calls stop, by a seccomp filter, for
// memtrap's listener, which answers them from and into the Area's Old (the
// action the agent passes the faults that are not memtrap's to), as the
// kernel would from its own table. The agent's own calls (its code's
// addresses) are let through, and so are those of forked children, which
// have their own handlers (and the agent's only as they inherited it: it
// gives them their pages back and passes faults on).
//
// The filter stays with the process and its children; once memtrap is
// gone (the target exited: run mode only) nothing asks it.

// listener answers the filter's calls on a goroutine of its own.
type listener struct {
	w    *Watch
	fd   int
	once sync.Once
}

// sigactionSize is the kernel's struct sigaction's.
const sigactionSize = 32

// filter is the classic BPF program: rt_sigaction(SIGSEGV, ...) from
// outside [lo, hi), the agent's code, goes to the listener.
func filter(lo, hi uint64) []unix.SockFilter {
	const (
		ld  = unix.BPF_LD | unix.BPF_W | unix.BPF_ABS
		jeq = unix.BPF_JMP | unix.BPF_JEQ | unix.BPF_K
		jge = unix.BPF_JMP | unix.BPF_JGE | unix.BPF_K
		ret = unix.BPF_RET | unix.BPF_K
	)
	// seccomp_data: nr at 0, arch at 4, instruction_pointer at 8, args
	// from 16. A jump skips as many instructions as it says: the last
	// two are notify (index 11) and allow (12).
	const notify, allow = 11, 12
	to := func(from, target int) uint8 { return uint8(target - from - 1) }
	prog := []unix.SockFilter{
		0:  {Code: ld, K: 4},
		1:  {Code: jeq, K: unix.AUDIT_ARCH_X86_64, Jf: to(1, allow)},
		2:  {Code: ld, K: 0}, // nr: an x32 call's has bit 30, never equal
		3:  {Code: jeq, K: unix.SYS_RT_SIGACTION, Jf: to(3, allow)},
		4:  {Code: ld, K: 16}, // the signal, an int: the low half
		5:  {Code: jeq, K: uint32(unix.SIGSEGV), Jf: to(5, allow)},
		6:  {Code: ld, K: 12}, // ip, high half
		7:  {Code: jeq, K: uint32(lo >> 32), Jf: to(7, notify)},
		8:  {Code: ld, K: 8}, // ip, low half
		9:  {Code: jge, K: uint32(lo), Jf: to(9, notify)},
		10: {Code: jge, K: uint32(hi), Jt: to(10, notify), Jf: to(10, allow)},
		11: {Code: ret, K: unix.SECCOMP_RET_USER_NOTIF},
		12: {Code: ret, K: unix.SECCOMP_RET_ALLOW},
	}
	return prog
}

// listen installs the filter in the target (t its only thread, stopped)
// and takes its listener.
func listen(w *Watch, t *tracer.Thread) (*listener, error) {
	lo := w.in.Base
	hi := lo + agent.CodeSpan
	if lo>>32 != hi>>32 {
		return nil, errors.New("the agent's code straddles a 4 GiB line: the filter cannot tell its calls")
	}
	prog := filter(lo, hi)
	code := make([]byte, 16+8*len(prog))
	buf := w.in.Base + agent.ScratchOff
	binary.LittleEndian.PutUint16(code[0:], uint16(len(prog)))
	binary.LittleEndian.PutUint64(code[8:], buf+16)
	for i, f := range prog {
		o := 16 + 8*i
		binary.LittleEndian.PutUint16(code[o:], f.Code)
		code[o+2], code[o+3] = f.Jt, f.Jf
		binary.LittleEndian.PutUint32(code[o+4:], f.K)
	}
	if len(code) > agent.ScratchSize {
		return nil, errors.New("the syscall filter does not fit the agent's scratch room")
	}
	if err := w.p.WriteMemory(buf, code); err != nil {
		return nil, fmt.Errorf("writing the syscall filter: %w", err)
	}
	const flags = unix.SECCOMP_FILTER_FLAG_NEW_LISTENER | unix.SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV
	install := func() (uintptr, error) {
		return t.Syscall(unix.SYS_SECCOMP, unix.SECCOMP_SET_MODE_FILTER, flags, uintptr(buf))
	}
	r, err := install()
	if errors.Is(err, unix.EACCES) {
		// seccomp needs no_new_privs without CAP_SYS_ADMIN (a
		// set-user-ID program run later gains nothing from it).
		if _, err := t.Syscall(unix.SYS_PRCTL, unix.PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0); err != nil {
			return nil, fmt.Errorf("prctl(PR_SET_NO_NEW_PRIVS): %w", err)
		}
		r, err = install()
	}
	if err != nil {
		return nil, fmt.Errorf("the syscall filter that hides the agent's SIGSEGV handler: %w", err)
	}
	ours, err := t.TakeFd(int(r))
	if err != nil {
		return nil, fmt.Errorf("taking the syscall filter's listener: %w", err)
	}
	return &listener{w: w, fd: ours}, nil
}

// serve answers the filter's calls until the listener closes or no task
// carries the filter.
func (l *listener) serve() {
	runtime.LockOSThread()
	seccompnotify.Serve(l.fd, l.answer)
}

// answer does one rt_sigaction(SIGSEGV, act, oact, size) as the kernel
// would, over the Area's Old; a forked child's runs as it is.
func (l *listener) answer(req *seccompnotify.Request) {
	id := req.ID()
	if !l.ours(req.Tid()) || l.w.execd() {
		// A child's, or a new program's: theirs, with no agent.
		_ = seccompnotify.Continue(l.fd, id)
		return
	}
	act, oact, size := req.Arg(1), req.Arg(2), req.Arg(3)
	if size != 8 {
		_ = seccompnotify.Answer(l.fd, id, 0, unix.EINVAL)
		return
	}
	w := l.w
	var nw [sigactionSize]byte
	if act != 0 {
		if n, _ := w.mem.ReadAt(nw[:], int64(act)); n != len(nw) {
			_ = seccompnotify.Answer(l.fd, id, 0, unix.EFAULT)
			return
		}
	}
	a := w.in.Shared.Area()
	if oact != 0 {
		var old [sigactionSize]byte
		binary.LittleEndian.PutUint64(old[0:], a.Old.Handler)
		binary.LittleEndian.PutUint64(old[8:], a.Old.Flags)
		binary.LittleEndian.PutUint64(old[16:], a.Old.Restorer)
		binary.LittleEndian.PutUint64(old[24:], a.Old.Mask)
		if n, _ := w.mem.WriteAt(old[:], int64(oact)); n != len(old) {
			_ = seccompnotify.Answer(l.fd, id, 0, unix.EFAULT)
			return
		}
	}
	if act != 0 {
		// The kernel never blocks SIGKILL or SIGSTOP in a handler.
		mask := binary.LittleEndian.Uint64(nw[24:]) &^ (1<<(unix.SIGKILL-1) | 1<<(unix.SIGSTOP-1))
		a.Old.Flags = binary.LittleEndian.Uint64(nw[8:])
		a.Old.Restorer = binary.LittleEndian.Uint64(nw[16:])
		a.Old.Mask = mask
		a.Old.Handler = binary.LittleEndian.Uint64(nw[0:])
	}
	_ = seccompnotify.Answer(l.fd, id, 0, 0)
}

// ours says whether task tid is one of the target's threads.
func (l *listener) ours(tid int) bool {
	_, err := os.Stat(fmt.Sprintf("/proc/%d/task/%d", l.w.p.Pid, tid))
	return err == nil
}

func (l *listener) close() {
	l.once.Do(func() { unix.Close(l.fd) })
}
