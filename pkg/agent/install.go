package agent

import (
	"encoding/binary"
	"fmt"
	"os"
	"unsafe"

	"github.com/memtrap/memtrap/pkg/tracer"
	"golang.org/x/sys/unix"
)

// Installed is the agent mapped into a target: its code at Base, the Area
// at Base+CodeSpan, shared with memtrap through Shared.
type Installed struct {
	Base   uint64
	Span   uint64 // bytes mapped from Base
	MemFd  int    // the target's descriptor of /proc/self/mem, the agent's
	PidFd  int    // the target's pidfd of memtrap, the agent's (-1: none)
	Shared *Shared
	action uint64 // the agent's struct sigaction, in its code pages
}

// Where Install puts what the injected calls read, in the code pages
// before they turn read-only and executable: past the blob.
const (
	nameOff   = 0x1c00 // "memtrap-agent", the memfd's name
	pathOff   = 0x1c20 // "/proc/self/mem"
	actionOff = 0x1c40 // the agent's struct sigaction
	// memFdMin: the agent's descriptor of /proc/self/mem is moved up
	// here, out of the way of the target's own numbering.
	memFdMin = 1000
	// tokenSize: the token's page, after the Area.
	tokenSize = 0x1000
)

// sigaction flags (asm-generic/signal.h, x86).
const (
	saSiginfo  = 0x4
	saOnstack  = 0x08000000
	saRestorer = 0x04000000
	saNodefer  = 0x40000000
)

// Install maps the agent into t's process (t stopped, and its other
// threads), with an empty Area memtrap maps too. Nothing traps into it
// until Arm. Every call it injects is undone if one fails.
func Install(p *tracer.Process, t *tracer.Thread) (in *Installed, err error) {
	ents, err := EntryPoints()
	if err != nil {
		return nil, err
	}
	if len(Blob()) > nameOff {
		return nil, fmt.Errorf("%w: %d bytes, past the %d Install leaves it", ErrBlob, len(Blob()), nameOff)
	}
	// The code, the Area, and a page of the target's own for the token
	// (Area.Token) that tells a forked child.
	span := uint64(CodeSpan + AreaSize + tokenSize)
	base, err := t.Syscall(unix.SYS_MMAP, 0, uintptr(span), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS, ^uintptr(0), 0)
	if err != nil {
		return nil, fmt.Errorf("mapping the agent: %w", err)
	}
	in = &Installed{Base: uint64(base), Span: span, MemFd: -1, PidFd: -1, action: uint64(base) + actionOff}
	defer func() {
		if err != nil {
			in.undo(t)
			in = nil
		}
	}()
	action := make([]byte, 32)
	binary.LittleEndian.PutUint64(action[0:], in.Base+uint64(ents.Handler))
	// SA_SIGINFO | SA_ONSTACK | SA_RESTORER, every signal blocked while
	// the handler runs (agent.c's lock) but SIGSEGV itself (SA_NODEFER)
	// and SIGSYS: a fault with SIGSEGV blocked kills the process, and so
	// does a trapped call with SIGSYS blocked, and the target's own
	// handler, which the agent may call, can do either.
	binary.LittleEndian.PutUint64(action[8:], saSiginfo|saOnstack|saRestorer|saNodefer)
	binary.LittleEndian.PutUint64(action[16:], in.Base+uint64(ents.Restorer))
	binary.LittleEndian.PutUint64(action[24:], ^uint64(0)&^(1<<(unix.SIGSEGV-1)|1<<(unix.SIGSYS-1)))
	for _, w := range []struct {
		off uint64
		b   []byte
	}{{0, Blob()}, {nameOff, []byte("memtrap-agent\x00")}, {pathOff, []byte("/proc/self/mem\x00")}, {actionOff, action}} {
		if err := p.WriteMemory(in.Base+w.off, w.b); err != nil {
			return in, fmt.Errorf("writing the agent: %w", err)
		}
	}
	fd, err := t.Syscall(unix.SYS_MEMFD_CREATE, uintptr(in.Base+nameOff), unix.MFD_CLOEXEC)
	if err != nil {
		return in, fmt.Errorf("the agent's memfd: %w", err)
	}
	defer func() { _, _ = t.Syscall(unix.SYS_CLOSE, fd) }() // the mappings keep it
	if _, err := t.Syscall(unix.SYS_FTRUNCATE, fd, uintptr(AreaSize)); err != nil {
		return in, fmt.Errorf("the agent's memfd: %w", err)
	}
	if _, err := t.Syscall(unix.SYS_MMAP, uintptr(in.Base+CodeSpan), uintptr(AreaSize), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED|unix.MAP_FIXED, fd, 0); err != nil {
		return in, fmt.Errorf("mapping the agent's area: %w", err)
	}
	f, err := os.OpenFile(fmt.Sprintf("/proc/%d/fd/%d", p.Pid, fd), os.O_RDWR, 0)
	if err != nil {
		return in, fmt.Errorf("the agent's area: %w", err)
	}
	in.Shared, err = mapArea(int(f.Fd()))
	f.Close()
	if err != nil {
		return in, err
	}
	mem, err := t.Syscall(unix.SYS_OPENAT, uintptr(unix.AT_FDCWD&0xffffffff), uintptr(in.Base+pathOff), unix.O_RDWR|unix.O_CLOEXEC)
	if err != nil {
		return in, fmt.Errorf("the agent's /proc/self/mem: %w", err)
	}
	high, err := t.Syscall(unix.SYS_FCNTL, mem, unix.F_DUPFD_CLOEXEC, memFdMin)
	_, _ = t.Syscall(unix.SYS_CLOSE, mem)
	if err != nil {
		return in, fmt.Errorf("the agent's /proc/self/mem: %w", err)
	}
	in.MemFd = int(high)
	if _, err := t.Syscall(unix.SYS_MPROTECT, uintptr(in.Base), CodeSpan, unix.PROT_READ|unix.PROT_EXEC); err != nil {
		return in, fmt.Errorf("the agent's code: %w", err)
	}
	// memtrap's pidfd, for the agent to see memtrap go (its poll turns
	// readable): the target's next stores run without it then.
	a := in.Shared.Area()
	a.MPid, a.MPidFd = uint64(os.Getpid()), -1
	if pfd, err := t.Syscall(unix.SYS_PIDFD_OPEN, uintptr(os.Getpid()), 0); err == nil {
		high, err := t.Syscall(unix.SYS_FCNTL, pfd, unix.F_DUPFD_CLOEXEC, memFdMin)
		_, _ = t.Syscall(unix.SYS_CLOSE, pfd)
		if err == nil {
			a.MPidFd, in.PidFd = int32(high), int(high)
		}
	}
	// MADV_WIPEONFORK (Linux 4.14) zeroes the token in a forked child's
	// copy of the page: a load tells the agent, where getpid and a probe
	// of its memory would cost two calls per write. Without it Token
	// stays 0 and the agent makes them.
	token := in.Base + CodeSpan + uint64(AreaSize)
	if _, err := t.Syscall(unix.SYS_MADVISE, uintptr(token), tokenSize, unix.MADV_WIPEONFORK); err == nil {
		if err := p.WriteMemory(token, []byte{1, 0, 0, 0, 0, 0, 0, 0}); err != nil {
			return in, fmt.Errorf("writing the agent's token: %w", err)
		}
		a.Token = token
	}
	a.Version, a.MemFd, a.Pid = Version, int32(in.MemFd), uint64(p.Pid)
	a.Magic = Magic
	return in, nil
}

// Arm makes the agent the target's SIGSEGV handler, the target's own
// action kept in the Area for the faults that are not memtrap's.
func (in *Installed) Arm(t *tracer.Thread) error {
	old := in.Base + CodeSpan + uint64(unsafe.Offsetof(Area{}.Old))
	if _, err := t.Syscall(unix.SYS_RT_SIGACTION, uintptr(unix.SIGSEGV), uintptr(in.action), uintptr(old), 8); err != nil {
		return fmt.Errorf("installing the agent's handler: %w", err)
	}
	return nil
}

// ArmSyscalls makes the agent the target's SIGSYS handler too, for the
// system calls a seccomp filter traps (SECCOMP_RET_TRAP with TrapData),
// the target's own action kept in the Area for every other SIGSYS.
func (in *Installed) ArmSyscalls(t *tracer.Thread) error {
	old := in.Base + CodeSpan + uint64(unsafe.Offsetof(Area{}.OldSys))
	if _, err := t.Syscall(unix.SYS_RT_SIGACTION, uintptr(unix.SIGSYS), uintptr(in.action), uintptr(old), 8); err != nil {
		return fmt.Errorf("installing the agent's SIGSYS handler: %w", err)
	}
	return nil
}

// undo takes out what Install put in, as far as it got.
func (in *Installed) undo(t *tracer.Thread) {
	if in.Shared != nil {
		in.Shared.Close()
	}
	if in.MemFd >= 0 {
		_, _ = t.Syscall(unix.SYS_CLOSE, uintptr(in.MemFd))
	}
	_, _ = t.Syscall(unix.SYS_MUNMAP, uintptr(in.Base), uintptr(in.Span))
}
