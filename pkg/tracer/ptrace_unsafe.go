package tracer

import (
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Siginfo is the kernel's siginfo_t, kept raw so it can be handed back
// unchanged with PTRACE_SETSIGINFO.
type Siginfo [128]byte

// Signo is si_signo.
func (s *Siginfo) Signo() int { return int(*(*int32)(unsafe.Pointer(&s[0]))) }

// Code is si_code.
func (s *Siginfo) Code() int { return int(*(*int32)(unsafe.Pointer(&s[8]))) }

// Addr is si_addr, meaningful for SIGSEGV, SIGBUS, SIGILL, SIGFPE and SIGTRAP.
func (s *Siginfo) Addr() uint64 { return *(*uint64)(unsafe.Pointer(&s[16])) }

// senderPid is si_pid, meaningful for SI_USER and SI_TKILL signals.
func (s *Siginfo) senderPid() int { return int(*(*int32)(unsafe.Pointer(&s[16]))) }

func ptraceRaw(req int, pid int, addr, data uintptr) error {
	_, _, e := unix.Syscall6(unix.SYS_PTRACE, uintptr(req), uintptr(pid), addr, data, 0, 0)
	if e != 0 {
		return e
	}
	return nil
}

// ptracePtr is ptraceRaw for a request whose data is a pointer to Go
// memory. The conversion to uintptr must happen in the Syscall6 call
// itself: converted any earlier, the object (often on a goroutine stack)
// can move before the kernel writes to it, and the kernel writes to where
// it was.
func ptracePtr(req int, pid int, addr uintptr, data unsafe.Pointer) error {
	_, _, e := unix.Syscall6(unix.SYS_PTRACE, uintptr(req), uintptr(pid), addr, uintptr(data), 0, 0)
	if e != 0 {
		return e
	}
	return nil
}

func ptraceSeize(pid int, opts int) error {
	return ptraceRaw(unix.PTRACE_SEIZE, pid, 0, uintptr(opts))
}

func ptraceDetach(tid int, sig int) error {
	return ptraceRaw(unix.PTRACE_DETACH, tid, 0, uintptr(sig))
}

func ptraceCont(tid int, sig int) error {
	return ptraceRaw(unix.PTRACE_CONT, tid, 0, uintptr(sig))
}

func ptraceStep(tid int, sig int) error {
	return ptraceRaw(unix.PTRACE_SINGLESTEP, tid, 0, uintptr(sig))
}

func ptraceListen(tid int) error {
	return ptraceRaw(unix.PTRACE_LISTEN, tid, 0, 0)
}

func ptraceInterrupt(tid int) error {
	return ptraceRaw(unix.PTRACE_INTERRUPT, tid, 0, 0)
}

func ptraceGetSiginfo(tid int, si *Siginfo) error {
	return ptracePtr(unix.PTRACE_GETSIGINFO, tid, 0, unsafe.Pointer(si))
}

func ptraceSetSiginfo(tid int, si *Siginfo) error {
	return ptracePtr(unix.PTRACE_SETSIGINFO, tid, 0, unsafe.Pointer(si))
}

// ptracePeekWord makes a PEEK request (PEEKUSR, PEEKDATA) the kernel
// answers by storing the word at data, and returns the word.
func ptracePeekWord(req int, pid int, addr uintptr) (uint64, error) {
	var v uint64
	err := ptracePtr(req, pid, addr, unsafe.Pointer(&v))
	return v, err
}

func ptraceGetRegs(tid int, r *unix.PtraceRegs) error {
	return ptracePtr(unix.PTRACE_GETREGS, tid, 0, unsafe.Pointer(r))
}

func ptraceSetRegs(tid int, r *unix.PtraceRegs) error {
	return ptracePtr(unix.PTRACE_SETREGS, tid, 0, unsafe.Pointer(r))
}

func ptraceEventMsg(tid int) (uint64, error) {
	var msg uint64
	err := ptracePtr(unix.PTRACE_GETEVENTMSG, tid, 0, unsafe.Pointer(&msg))
	return msg, err
}

// spinWait is how long wait4 polls before it sleeps. A trapped write's
// next stop usually comes within microseconds; picking it up without
// sleeping saves waking this CPU again, which dominates a ptrace round trip
// on a small VM (measured on 2 vCPUs: 75 -> 57 us per emulated write, 110 ->
// 79 us per debug-register trap). A target that runs on costs memtrap at
// most this much CPU per resume.
const spinWait = 50 * time.Microsecond

// wait4 waits for a stop of one of the calling thread's tracees (tid -1 for
// any). __WNOTHREAD keeps two Processes on two ptrace threads of one Go
// program, and the program's other children, out of each other's way.
func wait4(tid int) (int, unix.WaitStatus, error) { return wait4Idle(tid, nil) }

// wait4Idle is wait4 that calls idle, if not nil, before it sleeps.
func wait4Idle(tid int, idle func()) (int, unix.WaitStatus, error) {
	var ws unix.WaitStatus
	for start := time.Now(); time.Since(start) < spinWait; {
		pid, err := unix.Wait4(tid, &ws, unix.WALL|unix.WNOTHREAD|unix.WNOHANG, nil)
		if pid != 0 || (err != nil && err != unix.EINTR) {
			return pid, ws, err
		}
	}
	if idle != nil {
		idle()
	}
	for {
		pid, err := unix.Wait4(tid, &ws, unix.WALL|unix.WNOTHREAD, nil)
		if err == unix.EINTR {
			continue
		}
		return pid, ws, err
	}
}

// kcmpSameVM reports whether two tasks share one address space.
func kcmpSameVM(pid1, pid2 int) (bool, error) {
	const kcmpVM = 1 // enum kcmp_type: KCMP_FILE, KCMP_VM, ...
	r, _, e := unix.Syscall6(unix.SYS_KCMP, uintptr(pid1), uintptr(pid2), kcmpVM, 0, 0, 0)
	if e != 0 {
		return false, e
	}
	return r == 0, nil
}

// event is the PTRACE_EVENT_* of a stop, 0 for none. (WaitStatus.TrapCause
// answers only for SIGTRAP stops, and group-stops carry other signals.)
func event(ws unix.WaitStatus) int { return int(uint32(ws) >> 16) }

// ptraceGetRseqConfiguration is PTRACE_GET_RSEQ_CONFIGURATION (Linux 5.13).
const ptraceGetRseqConfiguration = 0x420f

// Rseq returns the thread's registered rseq area (address 0: none), which
// the kernel writes whenever the thread is preempted, migrated or signalled.
func (t *Thread) Rseq() (addr uint64, size uint32, err error) {
	if t.rseq.ptr != 0 {
		return t.rseq.ptr, t.rseq.size, nil
	}
	var conf struct {
		ptr       uint64
		size      uint32
		signature uint32
		flags     uint32
		pad       uint32
	}
	if err := ptracePtr(ptraceGetRseqConfiguration, t.Tid, unsafe.Sizeof(conf), unsafe.Pointer(&conf)); err != nil {
		return 0, 0, err
	}
	if conf.ptr != 0 {
		t.rseq = rseqConf{conf.ptr, conf.size}
	}
	return conf.ptr, conf.size, nil
}

// rseqConf is the start of struct ptrace_rseq_configuration: where a
// thread's rseq area is. A thread registers once (glibc, as it starts) and
// keeps it until it exits or executes a new program; one that unregisters
// to register again elsewhere is not seen (memtrap would read the old).
type rseqConf struct {
	ptr  uint64
	size uint32
}
