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
// Each State names its process: the target, or a child of it memtrap
// follows (--follow-forks), which the guardian guards too, from its first
// State (sent before the child runs; the guardian opens the child's pidfd
// as it reads it) to an empty one (the child exited, or was let go).
//
// A normal end (exit, detach, failure) sends the end frame: the guardian
// exits without touching the target. If memtrap's ptrace thread ends (its
// PIDFD_THREAD pidfd, opened at the start, turns readable) or the pipe
// closes without the end frame, memtrap is dead: the guardian seizes every thread of the target as soon as the
// kernel has let them go ([tracer.Reclaim]; ptrace allows one tracer, and a
// dead tracer's tracees are released as it exits), gives back what State
// says (pages' protections, debug registers, breakpoint bytes, return
// addresses, memtrap's mappings), lets the traps the target ran into
// meanwhile run again, and detaches; each process on a thread of its own,
// all at once.
//
// # The window
//
// The kernel lets a dead tracer's tracees go only when the tracer's thread
// runs its own exit, 0.1-3 ms after the SIGKILL on a quiet machine and up
// to hundreds of ms on a loaded one (the killed thread waits for a CPU);
// the guardian has every thread seized a fraction of a millisecond later. A
// trap the target runs into in between kills it: before the release it
// stops the target for a tracer that is gone, and the kernel delivers its
// signal when it lets the target go; after, nothing traces it. So does a
// trap memtrap was handling when it died, and a thread it single-stepped
// since it last resumed it (the kernel leaves the step's trap flag set
// until the next resume). ptrace has no way to take a stopped thread's
// signal back without resuming it, and one tracer only: this cannot be
// helped from another process.
//
// # A thread in the middle of a call
//
// Before memtrap changes a thread's signal mask or registers for an
// injected call (or a step), it writes them to a page it shares with the
// guardian (a memfd, the guardian's fd 5; tracer.ThreadLog), and clears
// the record once they are back. Injected calls run from memtrap's code
// page (package hook's landing, `syscall; jmp .`): a thread let go there
// makes the call and stays in the loop. The guardian gives the recorded
// thread its mask back, and its registers if it is at the landing.
package guard
