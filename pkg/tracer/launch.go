package tracer

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
)

// LaunchOptions says how to start a target.
type LaunchOptions struct {
	Env   []string // nil: memtrap's own environment
	Dir   string
	Stdio [3]*os.File // nil entries: memtrap's own
}

// ErrNotExecutable means the program to launch cannot be run.
var ErrNotExecutable = errors.New("not executable")

// Launch starts argv under trace, stopped before its first instruction (in
// the dynamic loader, or at the entry point of a static program), with every
// thread it will create traced. If memtrap dies, the kernel kills the target
// (PTRACE_O_EXITKILL).
//
// The child is started with PTRACE_TRACEME, which Go offers, then handed
// over to PTRACE_SEIZE, which memtrap needs (PTRACE_INTERRUPT and clean
// group-stops): while it is briefly detached it spins on a two-byte `jmp .`
// written over its first instruction, so it runs none of its own code.
//
// Precondition: called on a goroutine locked to its OS thread (see Locked).
func Launch(argv []string, opts LaunchOptions) (*Process, error) {
	if len(argv) == 0 {
		return nil, errors.New("no program to run")
	}
	quietChildStops()
	path, err := lookPath(argv[0])
	if err != nil {
		return nil, err
	}
	files := make([]*os.File, 3)
	for i, f := range opts.Stdio {
		files[i] = f
		if f == nil {
			files[i] = []*os.File{os.Stdin, os.Stdout, os.Stderr}[i]
		}
	}
	env := opts.Env
	if env == nil {
		env = os.Environ()
	}
	proc, err := os.StartProcess(path, argv, &os.ProcAttr{
		Dir:   opts.Dir,
		Env:   env,
		Files: files,
		Sys:   &syscall.SysProcAttr{Ptrace: true},
	})
	if err != nil {
		return nil, fmt.Errorf("starting %s: %w", argv[0], err)
	}
	pid := proc.Pid
	_ = proc.Release()
	p, err := seizeChild(pid)
	if err != nil {
		_ = unix.Kill(pid, unix.SIGKILL)
		_, _, _ = wait4(pid)
		return nil, err
	}
	return p, nil
}

func seizeChild(pid int) (*Process, error) {
	_, ws, err := wait4(pid)
	if err != nil {
		return nil, fmt.Errorf("waiting for %d to exec: %w", pid, err)
	}
	if !ws.Stopped() || ws.StopSignal() != unix.SIGTRAP {
		return nil, fmt.Errorf("process %d did not stop at exec (status %#x)", pid, uint32(ws))
	}
	p, err := newProcess(pid)
	if err != nil {
		return nil, err
	}
	p.ownChild = true
	var regs unix.PtraceRegs
	if err := ptraceGetRegs(pid, &regs); err != nil {
		return nil, fmt.Errorf("PTRACE_GETREGS %d: %w", pid, err)
	}
	orig := make([]byte, 2)
	if err := p.ReadMemory(regs.Rip, orig); err != nil {
		return nil, err
	}
	if err := p.WriteMemory(regs.Rip, []byte{0xeb, 0xfe}); err != nil {
		return nil, err
	}
	p.options = baseOptions | unix.PTRACE_O_TRACEEXIT | unix.PTRACE_O_EXITKILL | unix.PTRACE_O_TRACESYSGOOD
	if err := ptraceDetach(pid, 0); err != nil {
		return nil, fmt.Errorf("PTRACE_DETACH %d: %w", pid, err)
	}
	if err := ptraceSeize(pid, p.options); err != nil {
		return nil, fmt.Errorf("PTRACE_SEIZE %d: %w", pid, err)
	}
	if err := ptraceInterrupt(pid); err != nil {
		return nil, fmt.Errorf("PTRACE_INTERRUPT %d: %w", pid, err)
	}
	for {
		_, ws, err = wait4(pid)
		if err != nil {
			return nil, fmt.Errorf("waiting for %d: %w", pid, err)
		}
		if !ws.Stopped() {
			return nil, fmt.Errorf("process %d ended before it started (status %#x)", pid, uint32(ws))
		}
		if event(ws) == unix.PTRACE_EVENT_STOP {
			break
		}
		// A signal sent to the child from outside; it can wait.
		if err := ptraceCont(pid, int(ws.StopSignal())); err != nil {
			return nil, err
		}
	}
	if err := p.WriteMemory(regs.Rip, orig); err != nil {
		return nil, err
	}
	var now unix.PtraceRegs
	if err := ptraceGetRegs(pid, &now); err != nil {
		return nil, err
	}
	if now.Rip != regs.Rip {
		return nil, fmt.Errorf("process %d moved from %#x to %#x while handed over", pid, regs.Rip, now.Rip)
	}
	t := p.addThread(pid)
	t.stopped = true
	return p, nil
}

func lookPath(name string) (string, error) {
	var path string
	if strings.Contains(name, "/") {
		path = name
	} else {
		found, err := exec.LookPath(name)
		if err != nil {
			return "", fmt.Errorf("%s: command not found", name)
		}
		path = found
	}
	st, err := os.Stat(path)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return "", fmt.Errorf("%s: no such file", name)
		}
		return "", fmt.Errorf("%s: %w", name, err)
	}
	if st.IsDir() {
		return "", fmt.Errorf("%s: is a directory: %w", name, ErrNotExecutable)
	}
	if err := unix.Access(path, unix.X_OK); err != nil || st.Mode()&0o111 == 0 {
		return "", fmt.Errorf("%s: permission denied: %w", name, ErrNotExecutable)
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		return path, nil
	}
	return abs, nil
}

// Auxv reads the target's auxiliary vector as a map from AT_* to value.
func (p *Process) Auxv() (map[uint64]uint64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/auxv", p.Pid))
	if err != nil {
		return nil, err
	}
	out := map[uint64]uint64{}
	for i := 0; i+16 <= len(b); i += 16 {
		k := leUint64(b[i:])
		if k == 0 {
			break
		}
		out[k] = leUint64(b[i+8:])
	}
	return out, nil
}

func leUint64(b []byte) uint64 {
	_ = b[7]
	return uint64(b[0]) | uint64(b[1])<<8 | uint64(b[2])<<16 | uint64(b[3])<<24 |
		uint64(b[4])<<32 | uint64(b[5])<<40 | uint64(b[6])<<48 | uint64(b[7])<<56
}

// AtEntry is the auxv key of the program's entry point.
const AtEntry = 9

// RunToEntry lets a freshly launched target run its dynamic loader and stops
// it at the program's entry point, where its libraries are mapped and none of
// its own code has run. Stops on the way are handled as a transparent tracer
// would: signals delivered, new processes detached. If the target ends on the
// way, the error is ErrProcessExited.
func (p *Process) RunToEntry() (*Thread, error) {
	if err := p.check(); err != nil {
		return nil, err
	}
	aux, err := p.Auxv()
	if err != nil {
		return nil, fmt.Errorf("reading auxv: %w", err)
	}
	entry := aux[AtEntry]
	t := p.threads[p.Pid]
	var regs unix.PtraceRegs
	if err := t.Regs(&regs); err != nil {
		return nil, err
	}
	if regs.Rip == entry {
		return t, nil
	}
	orig := []byte{0}
	if err := p.ReadMemory(entry, orig); err != nil {
		return nil, err
	}
	if err := p.WriteMemory(entry, []byte{0xcc}); err != nil {
		return nil, err
	}
	restore := func() error { return p.WriteMemory(entry, orig) }
	if err := p.ResumeAll(); err != nil {
		return nil, err
	}
	wait := p.Wait
	if len(p.followed) > 0 {
		// After an execve, with children followed: their stops are
		// for the caller's loop, later; this waits for the new
		// image's only thread.
		wait = func() (Stop, error) { return p.waitTask(p.Pid) }
	}
	woken := false
	for {
		st, err := wait()
		if err != nil {
			return nil, err
		}
		switch st.Kind {
		case StopExited:
			return nil, ErrProcessExited
		case StopSignal:
			if st.Sig == int(unix.SIGTRAP) && st.Info.Code() == siKernel {
				if err := st.Thread.Regs(&regs); err != nil {
					return nil, err
				}
				if regs.Rip == entry+1 {
					if err := restore(); err != nil {
						return nil, err
					}
					regs.Rip = entry
					if err := st.Thread.SetRegs(&regs); err != nil {
						return nil, err
					}
					if err := p.StopOthers(st.Thread); err != nil {
						return nil, err
					}
					if woken {
						p.Wake()
					}
					return st.Thread, nil
				}
			}
			if err := st.Thread.Resume(st.Sig); err != nil {
				return nil, err
			}
		case StopGroup:
			if err := st.Thread.Listen(); err != nil {
				return nil, err
			}
		case StopFork:
			// Nothing is watched yet: the child needs nothing from us
			// but, after an execve, a tracer for the syscall filter.
			release := p.DetachChild
			if p.filtered {
				release = p.KeepChild
			}
			if err := release(st.Child); err != nil {
				return nil, err
			}
			if err := st.Thread.Resume(0); err != nil {
				return nil, err
			}
		case StopExec:
			return nil, errors.New("the target ran execve before reaching its entry point")
		case StopWake:
			// Asked for by the caller's side (a detach, say): asked
			// for again at the entry, where the caller looks.
			woken = true
			if err := st.Thread.Resume(0); err != nil {
				return nil, err
			}
		case StopSyscall:
			// A call of the loader's that memtrap's syscall filter
			// stops (after an execve the filter stays, and nothing of
			// the new image is watched yet): it runs as it is.
			if err := st.Thread.Resume(0); err != nil {
				return nil, err
			}
		default:
			return nil, fmt.Errorf("%v stop of thread %d before the entry point", st.Kind, st.Thread.Tid)
		}
	}
}

// DetachChild lets a new process reported by StopFork go untraced.
func (p *Process) DetachChild(pid int) error {
	p.notif.untrack(pid)
	return ignoreGone(ptraceDetach(pid, 0))
}

// Fork returns a Process for a child reported by StopFork, so that the
// caller can work on its copy of the address space (undo protections)
// before letting it go with Detach.
func (p *Process) Fork(pid int) (*Process, error) {
	c, err := newProcess(pid)
	if err != nil {
		return nil, err
	}
	c.sysInsn, c.quiet, c.notif = p.sysInsn, p.quiet, p.notif
	t := c.addThread(pid)
	t.stopped = true
	return c, nil
}
