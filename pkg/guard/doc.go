// Package guard keeps an attached target alive when memtrap itself dies
// (SIGKILL, a crash) while its pages are write-protected, its debug
// registers loaded or its breakpoints in place: left so, the target would
// die at its next write to a watched page (SIGSEGV), its next watched store
// (SIGTRAP) or its next call of a hooked function.
//
// At attach, memtrap starts a guardian: the memtrap binary again, run as
// "memtrap __guardian PID", a process of its own in a session of its own,
// so that the terminal's Ctrl-C and a kill of memtrap's process group do
// not reach it. memtrap keeps it told of everything it has changed in the
// target ([State]) over a pipe, before it lets the target run with a
// change; the guardian keeps the last whole State it read.
//
//	memtrap --(frame: 4-byte length, JSON State)--> guardian
//	memtrap --(frame: length endFrame)-----------> guardian   normal end
//
// A normal end (exit, detach, failure) sends the end frame: the guardian
// exits without touching the target. If the pipe closes without it, memtrap
// is dead: the guardian seizes every thread of the target as soon as the
// kernel has let them go ([tracer.Reclaim]; ptrace allows one tracer, and a
// dead tracer's tracees are released as it exits), gives back what State
// says (pages' protections, debug registers, breakpoint bytes, return
// addresses, memtrap's mappings), lets the traps the target ran into
// meanwhile run again, and detaches.
//
// # The window
//
// The kernel lets the tracees of a dead tracer go before the guardian can
// seize them: a write to an armed page in between kills the target (the
// guardian seizes it a few tens of microseconds after the release, spinning
// on PTRACE_SEIZE from the moment the pipe closes). A thread that memtrap
// held in a signal-delivery-stop for its own trap (a write being
// completed, a breakpoint being handled) is let go with that signal and
// dies of it; one stopped in the middle of an injected system call or a
// single-step runs on with memtrap's registers. Neither can be helped from
// outside: ptrace has no way to take a stopped thread's signal back without
// resuming it.
package guard
