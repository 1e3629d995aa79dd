package pagewatch

import (
	"errors"
	"fmt"

	"github.com/memtrap/memtrap/pkg/guard"
	"github.com/memtrap/memtrap/pkg/tracer"
)

// Engines.
const (
	EnginePage = "page" // write-protected pages: any size, any number of regions
	EngineHW   = "hw"   // x86 debug registers: up to 4 aligned slots of 1-8 bytes
	EngineAuto = "auto" // hw when every region fits, page otherwise
)

// An engine is how a watch catches the writes to its regions: write-protected
// pages (pageEngine) or debug registers (hwEngine). The Watch drives it and
// never asks which one it has; the engine keeps its own state and reaches the
// watch's common parts (the process, the options, the scratch area, the
// reports) through its watch.
//
// Every method runs on the ptrace thread. Those given a thread t need it
// stopped; arm, add, remove and disarm also need the other threads stopped.
type engine interface {
	// name is EnginePage or EngineHW.
	name() string
	// arm starts watching the watch's regions.
	arm(t *tracer.Thread) error
	// add starts watching regions besides the watch's, arming only what
	// they concern; remove stops watching drop, keep being what stays.
	add(t *tracer.Thread, regions []*Region) error
	remove(t *tracer.Thread, drop, keep []*Region) error
	// disarm undoes arm and add: the target as it was.
	disarm(t *tracer.Thread) error
	// owns says whether a signal stop is this engine's trap: a write
	// fault on an armed page, a debug-register hit.
	owns(st tracer.Stop) bool
	// trap completes the write behind an owned stop (or finds what it
	// wrote), reports it and resumes the thread.
	trap(st tracer.Stop) error
	// deliver resumes t at the delivery of sig, delivering it: the page
	// engine must unprotect pages the signal frame lands on.
	deliver(t *tracer.Thread, sig int) error
	// syscallEntry follows a call the target is about to make, the
	// common checks done: the target's own memory management of watched
	// memory, and calls that write there (sysout). It returns with t
	// resumed, recording in w.calls a call it follows to its exit.
	syscallEntry(t *tracer.Thread, si tracer.SyscallInfo) error
	// syscallExit settles a followed call at its exit: the kernel's
	// bytes where the target asked them, and reported. t stays stopped.
	syscallExit(t *tracer.Thread, call *kcall) error
	// spans lists the memory whose system calls must be followed.
	spans() []span
	// kernelSpans lists, for the quick check, memory a call may not write
	// unseen: spans and more (pages armed later again, too).
	kernelSpans() []span
	// fork makes the engine of cw, the watch of a followed child that
	// forked off (t its thread, stopped): the child inherited the
	// parent's address space, protections included.
	fork(cw *Watch, t *tracer.Thread) (engine, error)
	// guardState adds what is armed to s, for a guardian (SyncGuard).
	guardState(s *guard.State)
	// release undoes, in a forked child that is not followed (t its
	// thread, stopped), what it inherited of this engine's arming.
	release(t *tracer.Thread) error
	// leave undoes what a thread sharing the watched memory (a vfork
	// child, stopped) has of this engine's own, before it is let go;
	// leaveNote says what remains of the arming for it.
	leave(t *tracer.Thread) error
	leaveNote() string
}

// HWPicked says whether EngineAuto watches regions with the debug
// registers: they fit them, and they fire on this machine.
func HWPicked(regions []*Region) bool {
	if _, ok := hwSlots(regions); !ok {
		return false
	}
	return tracer.CheckDebugRegisters() == nil
}

// newEngine picks the engine for regions: the debug registers when
// Options.Engine asks for them (hw) or allows them (auto) and they can
// watch regions, the pages otherwise. Debug registers that the machine
// accepts but never fires would lose every write silently, so they are
// checked first (tracer.CheckDebugRegisters): auto then takes the page
// engine, quietly (the report header names the engine), and hw is refused.
// Where the check cannot run, hw trusts them and auto does not.
func (w *Watch) newEngine(regions []*Region) (engine, error) {
	switch w.opts.Engine {
	case "", EnginePage:
		return newPageEngine(w), nil
	case EngineHW, EngineAuto:
	default:
		return nil, fmt.Errorf("unknown engine %q", w.opts.Engine)
	}
	slots, ok := hwSlots(regions)
	if !ok {
		if w.opts.Engine == EngineHW {
			return nil, regionError("--engine hw: the regions need more than the 4 debug registers (each covers one aligned 1, 2, 4 or 8-byte slot); use --engine page or auto")
		}
		return newPageEngine(w), nil
	}
	if err := tracer.CheckDebugRegisters(); err != nil {
		switch {
		case w.opts.Engine == EngineHW && errors.Is(err, tracer.ErrDebugRegsDead):
			return nil, fmt.Errorf("engine hw: %w (a perf breakpoint on memtrap's own memory counted none of 8 stores); use the page engine", err)
		case w.opts.Engine == EngineHW:
			w.note(fmt.Sprintf("could not check that debug registers fire here (%v); trusting them", err))
		default:
			return newPageEngine(w), nil
		}
	}
	return &hwEngine{w: w, slots: slots, shadow: map[*Region][]byte{}}, nil
}
