package guard

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"syscall"
	"time"

	"github.com/memtrap/memtrap/pkg/tracer"
	"golang.org/x/sys/unix"
)

// Command is the hidden subcommand that runs a guardian: the memtrap binary
// calls Main when its first argument is Command.
const Command = "__guardian"

// endFrame, as a frame's length, is the end frame: memtrap ends normally.
const endFrame = ^uint32(0)

// Link is memtrap's side of a guardian: the pipe that keeps it told, and
// the page of the thread memtrap has changed (ThreadLog).
type Link struct {
	w    *os.File
	last map[int][]byte // what the guardian was told last, by process
	buf  []byte
	done chan struct{}
	log  *threadLog // nil: the page could not be made
}

// startTimeout bounds the guardian's start (a Go program's exec and
// runtime start, on a busy machine).
const startTimeout = 5 * time.Second

// Start runs a guardian of process pid: the running executable again
// (/proc/self/exe), with Command. It returns once the guardian is ready.
//
// Precondition: called on the ptrace thread (the guardian watches it: its
// end is when the kernel lets the target go).
func Start(pid int) (*Link, error) {
	tracerTid := unix.Gettid()
	exe, err := os.Executable()
	if err != nil {
		return nil, fmt.Errorf("starting a guardian: %w", err)
	}
	stateR, stateW, err := os.Pipe()
	if err != nil {
		return nil, fmt.Errorf("starting a guardian: %w", err)
	}
	readyR, readyW, err := os.Pipe()
	if err != nil {
		stateR.Close()
		stateW.Close()
		return nil, fmt.Errorf("starting a guardian: %w", err)
	}
	defer readyR.Close()
	l := &Link{w: stateW, last: map[int][]byte{}, done: make(chan struct{})}
	// Without the page the guardian still gives back what State says;
	// a thread memtrap dies in the middle of changing runs on changed.
	logFile, log := newLogPage()
	l.log = log
	if logFile != nil {
		defer logFile.Close() // the guardian has its own
	}
	started := make(chan error, 1)
	go func() {
		// The guardian is a child of this thread, which does nothing
		// else: the ptrace thread waits for its own tracees and
		// children (__WNOTHREAD), and must not see it end.
		runtime.LockOSThread()
		defer close(l.done)
		cmd := exec.Command(exe, Command, strconv.Itoa(pid), strconv.Itoa(tracerTid))
		cmd.ExtraFiles = []*os.File{stateR, readyW}
		if logFile != nil {
			cmd.ExtraFiles = append(cmd.ExtraFiles, logFile)
		} else if null, err := os.Open(os.DevNull); err == nil {
			// Read, it holds no record.
			defer null.Close()
			cmd.ExtraFiles = append(cmd.ExtraFiles, null)
		}
		cmd.Stderr = os.Stderr
		cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
		err := cmd.Start()
		stateR.Close()
		readyW.Close()
		started <- err
		if err == nil {
			_ = cmd.Wait()
		}
	}()
	if err := <-started; err != nil {
		stateW.Close()
		return nil, fmt.Errorf("starting a guardian: %w", err)
	}
	_ = readyR.SetReadDeadline(time.Now().Add(startTimeout))
	var b [1]byte
	if n, err := readyR.Read(b[:]); n != 1 {
		stateW.Close() // it exits when it sees the pipe closed
		if err == nil || errors.Is(err, os.ErrDeadlineExceeded) {
			err = errors.New("it did not start")
		}
		return nil, fmt.Errorf("starting a guardian: %w", err)
	}
	return l, nil
}

// newLogPage makes the page of the ThreadLog, mapped here; nil if it
// cannot be.
func newLogPage() (*os.File, *threadLog) {
	fd, err := unix.MemfdCreate("memtrap-thread-log", unix.MFD_CLOEXEC)
	if err != nil {
		return nil, nil
	}
	f := os.NewFile(uintptr(fd), "memtrap-thread-log")
	if err := unix.Ftruncate(fd, logPageSize); err != nil {
		f.Close()
		return nil, nil
	}
	mem, err := unix.Mmap(fd, 0, logPageSize, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		f.Close()
		return nil, nil
	}
	l := newThreadLog(mem)
	return f, &l
}

const logPageSize = 4096

// ThreadLog is what the tracer tells of the thread it changes
// (tracer.Process.SetThreadLog), nil if the guardian cannot know it.
func (l *Link) ThreadLog() tracer.ThreadLog {
	if l == nil || l.log == nil {
		return nil
	}
	return l.log
}

// Update tells the guardian what is changed in process s.Pid now: the
// target, or a child of it memtrap follows. It must be called before the
// process runs with a change (and may be called when nothing changed: the
// same State is not sent twice). An empty State ends the guarding of a
// process (it exited, or has nothing of memtrap's left).
func (l *Link) Update(s *State) error {
	if l == nil || l.w == nil {
		return nil
	}
	b, err := json.Marshal(s)
	if err != nil {
		return err
	}
	last, known := l.last[s.Pid]
	if bytes.Equal(b, last) || !known && s.Empty() {
		return nil
	}
	l.buf = binary.LittleEndian.AppendUint32(l.buf[:0], uint32(len(b)))
	l.buf = append(l.buf, b...)
	if _, err := l.w.Write(l.buf); err != nil {
		l.w.Close()
		l.w = nil
		return fmt.Errorf("the guardian is gone: %w", err)
	}
	if s.Empty() {
		delete(l.last, s.Pid)
	} else {
		l.last[s.Pid] = append(last[:0], b...)
	}
	return nil
}

// Close ends the guardian without it touching the target: memtrap has
// given everything back, or the target is gone. It waits (briefly) for the
// guardian's exit.
func (l *Link) Close() {
	if l == nil || l.w == nil {
		return
	}
	_, _ = l.w.Write(binary.LittleEndian.AppendUint32(nil, endFrame))
	l.w.Close()
	l.w = nil
	select {
	case <-l.done:
	case <-time.After(time.Second):
	}
}
