package fastwatch

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"

	"github.com/memtrap/memtrap/internal/seccompnotify"
	"github.com/memtrap/memtrap/pkg/agent"
	"github.com/memtrap/memtrap/pkg/procmaps"
	"github.com/memtrap/memtrap/pkg/tracer"
	"golang.org/x/sys/unix"
)

// The agent is the target's SIGSEGV handler (and, with kernel writes, its
// SIGSYS handler), and the target must not see it: its own rt_sigaction
// calls for those signals stop, by a seccomp filter, for memtrap's
// listener, which answers them from and into the Area's Old and OldSys
// (the actions the agent passes the signals that are not memtrap's to), as
// the kernel would from its own table. The agent's own calls (its code's
// addresses) are let through, and so are those of forked children, which
// have their own handlers (and the agent's only as they inherited it: it
// gives them their pages back and passes signals on). The same filter
// traps the calls that may write into armed pages (kernel.go).
//
// The filter stays with the process and its children; once memtrap is
// gone a keeper answers its calls (guard.StartKeeper), and its traps go to
// an agent that makes the call as it is.

// listener answers the filter's calls on a goroutine of its own.
type listener struct {
	w      *Watch
	fd     int
	ledger *seccompnotify.Ledger // the calls received, for a keeper (nil: none)
	once   sync.Once

	// notes wait for Run's goroutine (takeNotes); said keeps each said
	// once: per process for a refused listener, once for io_uring.
	mu    sync.Mutex
	notes []string
	said  map[string]bool
}

// sigactionSize is the kernel's struct sigaction's.
const sigactionSize = 32

// listen installs the filter in the target (t its only thread, stopped)
// and takes its listener.
func listen(w *Watch, t *tracer.Thread) (*listener, error) {
	rules := []tracer.FilterRule{}
	for _, sig := range []int{int(unix.SIGSEGV), int(unix.SIGSYS)} {
		rules = append(rules, tracer.FilterRule{Nr: unix.SYS_RT_SIGACTION, Args: []int{0},
			Ranges: []tracer.Range{{Lo: uint64(sig), Hi: uint64(sig) + 1}}, Action: unix.SECCOMP_RET_USER_NOTIF})
	}
	// The calls that would block SIGSEGV, which the agent does with it
	// left out (agent.c's unmasked).
	any := []tracer.Range{{Lo: 1, Hi: ^uint64(0)}}
	rules = append(rules,
		tracer.FilterRule{Nr: unix.SYS_RT_SIGACTION, Args: []int{1}, Ranges: any},
		tracer.FilterRule{Nr: unix.SYS_RT_SIGPROCMASK, Args: []int{1}, Ranges: any},
		tracer.FilterRule{Nr: unix.SYS_RT_SIGSUSPEND},
		tracer.FilterRule{Nr: unix.SYS_PPOLL, Args: []int{3}, Ranges: any},
		tracer.FilterRule{Nr: unix.SYS_PSELECT6, Args: []int{5}, Ranges: any},
		tracer.FilterRule{Nr: unix.SYS_EPOLL_PWAIT, Args: []int{4}, Ranges: any},
		tracer.FilterRule{Nr: unix.SYS_EPOLL_PWAIT2, Args: []int{4}, Ranges: any})
	// Closing the agent's own descriptors (/proc/self/mem, memtrap's
	// pidfd), which the agent pretends to do.
	for _, fd := range []int{w.in.MemFd, w.in.PidFd} {
		if fd >= 0 {
			rules = append(rules, tracer.FilterRule{Nr: unix.SYS_CLOSE, Args: []int{0}, Ranges: []tracer.Range{{Lo: uint64(fd), Hi: uint64(fd) + 1}}})
		}
	}
	rules = append(rules, tracer.FilterRule{Nr: unix.SYS_CLOSE_RANGE})
	// Only to say so (noteCall): a seccomp filter asking for a listener
	// of its own, which the kernel refuses under the agent's (one per
	// filter chain); io_uring, which memtrap does not follow.
	rules = append(rules,
		tracer.ListenerRule(unix.SECCOMP_RET_USER_NOTIF),
		tracer.FilterRule{Nr: unix.SYS_IO_URING_SETUP, Action: unix.SECCOMP_RET_USER_NOTIF},
		// The target's own execve: to say, when it calls it, that a
		// new program is not watched.
		tracer.FilterRule{Nr: unix.SYS_EXECVE, Action: unix.SECCOMP_RET_USER_NOTIF},
		tracer.FilterRule{Nr: unix.SYS_EXECVEAT, Action: unix.SECCOMP_RET_USER_NOTIF})
	rules = append(rules, mmRules(w.pages)...)
	if w.opts.KernelWrites {
		rules = append(rules, syscallRules(w.pages)...)
		rules = append(rules, vecRules()...)
	}
	exempt := tracer.Range{Lo: w.in.Base, Hi: w.in.Base + agent.CodeSpan}
	// The agent's traps only for calls from the code mapped now: a
	// program the target or a child executes later has no agent, and
	// SIGSYS would kill it (tracer.BuildProgramFrom).
	from, err := codeRanges(w.p.Pid)
	if err != nil {
		return nil, err
	}
	prog, err := tracer.BuildProgramFrom(rules, unix.SECCOMP_RET_TRAP|agent.TrapData, exempt, from)
	if err != nil {
		return nil, err
	}
	code := make([]byte, 16+8*len(prog))
	// The program goes into a mapping of its own for the call (the
	// kernel copies it).
	size := uintptr(len(code)+pageSize-1) &^ (pageSize - 1)
	m, err := t.Syscall(unix.SYS_MMAP, 0, size, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS, ^uintptr(0), 0)
	if err != nil {
		return nil, fmt.Errorf("mapping room for the syscall filter: %w", err)
	}
	defer func() { _, _ = t.Syscall(unix.SYS_MUNMAP, m, size) }()
	buf := uint64(m)
	binary.LittleEndian.PutUint16(code[0:], uint16(len(prog)))
	binary.LittleEndian.PutUint64(code[8:], buf+16)
	for i, f := range prog {
		o := 16 + 8*i
		binary.LittleEndian.PutUint16(code[o:], f.Code)
		code[o+2], code[o+3] = f.Jt, f.Jf
		binary.LittleEndian.PutUint32(code[o+4:], f.K)
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
	l := &listener{w: w, fd: ours}
	l.ledger, _ = seccompnotify.NewLedger() // without one, a keeper cannot answer the calls memtrap's death left
	return l, nil
}

// maxCodeRanges bounds codeRanges (each costs the filter's every call a
// few instructions; the nearest are merged).
const maxCodeRanges = 8

// codeRanges are the executable mappings of process pid, adjacent ones
// merged, at most maxCodeRanges (the closest merged).
func codeRanges(pid int) ([]tracer.Range, error) {
	maps, err := procmaps.Read(pid)
	if err != nil {
		return nil, err
	}
	var out []tracer.Range
	for _, m := range maps {
		if m.Prot&unix.PROT_EXEC == 0 {
			continue
		}
		if n := len(out); n > 0 && out[n-1].Hi == m.Start {
			out[n-1].Hi = m.End
			continue
		}
		out = append(out, tracer.Range{Lo: m.Start, Hi: m.End})
	}
	for len(out) > maxCodeRanges {
		k := 0
		for i := 1; i+1 < len(out); i++ {
			if out[i+1].Lo-out[i].Hi < out[k+1].Lo-out[k].Hi {
				k = i
			}
		}
		out[k].Hi = out[k+1].Hi
		out = append(out[:k+1], out[k+2:]...)
	}
	return out, nil
}

// serve answers the filter's calls until the listener closes or no task
// carries the filter.
func (l *listener) serve() {
	runtime.LockOSThread()
	seccompnotify.Serve(l.fd, l.ledger, l.answer)
}

// answer does one rt_sigaction(SIGSEGV or SIGSYS, act, oact, size) as the
// kernel would, over the Area's copy of the target's action; a forked
// child's runs as it is.
func (l *listener) answer(req *seccompnotify.Request) {
	id := req.ID()
	if req.Nr() != unix.SYS_RT_SIGACTION {
		l.noteCall(req)
		_ = seccompnotify.Continue(l.fd, id)
		return
	}
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
	cur := &a.Old
	if req.Arg(0) == uint64(unix.SIGSYS) {
		cur = &a.OldSys
	}
	if oact != 0 {
		var old [sigactionSize]byte
		binary.LittleEndian.PutUint64(old[0:], cur.Handler)
		binary.LittleEndian.PutUint64(old[8:], cur.Flags)
		binary.LittleEndian.PutUint64(old[16:], cur.Restorer)
		binary.LittleEndian.PutUint64(old[24:], cur.Mask)
		if n, _ := w.mem.WriteAt(old[:], int64(oact)); n != len(old) {
			_ = seccompnotify.Answer(l.fd, id, 0, unix.EFAULT)
			return
		}
	}
	if act != 0 {
		// The kernel never blocks SIGKILL or SIGSTOP in a handler.
		mask := binary.LittleEndian.Uint64(nw[24:]) &^ (1<<(unix.SIGKILL-1) | 1<<(unix.SIGSTOP-1))
		cur.Flags = binary.LittleEndian.Uint64(nw[8:])
		cur.Restorer = binary.LittleEndian.Uint64(nw[16:])
		cur.Mask = mask
		cur.Handler = binary.LittleEndian.Uint64(nw[0:])
	}
	_ = seccompnotify.Answer(l.fd, id, 0, 0)
}

// noteCall keeps the note a call the filter stops only to say so calls
// for, once: the call then runs as it is.
func (l *listener) noteCall(req *seccompnotify.Request) {
	pid := tgid(req.Tid())
	var key, m string
	switch {
	case req.Nr() == unix.SYS_SECCOMP && tracer.ListenerRequest(req.Arg(0), req.Arg(1)):
		key = fmt.Sprint("listener ", pid)
		m = fmt.Sprintf("process %d asked for a seccomp listener of its own (SECCOMP_FILTER_FLAG_NEW_LISTENER): the kernel refuses it (EBUSY) because memtrap's syscall filter holds the one listener a process may have (see README, Limits)", pid)
	case req.Nr() == unix.SYS_IO_URING_SETUP:
		key = "io_uring"
		m = fmt.Sprintf("process %d uses io_uring, which memtrap does not follow: an io_uring request writing into a watched page is not reported, and may fail with EFAULT", pid)
	case (req.Nr() == unix.SYS_EXECVE || req.Nr() == unix.SYS_EXECVEAT) && pid == l.w.p.Pid:
		key = "execve"
		m = fmt.Sprintf("process %d calls execve: the fast engine's agent stays with this program, and a new one it runs is not watched (the page engine watches the symbols again in a new image)", pid)
	default:
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.said[key] {
		return
	}
	if l.said == nil {
		l.said = map[string]bool{}
	}
	l.said[key] = true
	l.notes = append(l.notes, m)
}

// takeNotes hands out the notes kept since the last call.
func (l *listener) takeNotes() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := l.notes
	l.notes = nil
	return n
}

// tgid is the process of task tid (tid itself if /proc does not say).
func tgid(tid int) int {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", tid))
	if err != nil {
		return tid
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "Tgid:"); ok {
			if n, err := strconv.Atoi(strings.TrimSpace(v)); err == nil {
				return n
			}
		}
	}
	return tid
}

// ours says whether task tid is one of the target's threads.
func (l *listener) ours(tid int) bool {
	_, err := os.Stat(fmt.Sprintf("/proc/%d/task/%d", l.w.p.Pid, tid))
	return err == nil
}

func (l *listener) close() {
	l.once.Do(func() { unix.Close(l.fd) })
}
