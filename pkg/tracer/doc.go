// Package tracer owns a traced process: launching or attaching to it, its
// threads, their stops, their registers, the process's memory, and system
// calls injected into it. It knows nothing of symbols, DWARF or watched
// regions; those live in the packages that use it.
//
// # The ptrace thread
//
// Linux accepts ptrace requests for a tracee only from the OS thread that
// attached it, and delivers its stops only to that thread's wait4. Every
// method of [Process] and [Thread] therefore has one precondition: it is
// called from the goroutine that created the Process, locked to its OS thread
// with runtime.LockOSThread. [Locked] runs a function under that arrangement.
// The one exception is [Process.Wake], which any goroutine may call.
//
// # Stops
//
// [Process.Wait] returns the next stop that needs a decision from the caller:
// a signal about to be delivered, a group-stop, a fork or exec, an exit.
// Bookkeeping stops (a new thread's first stop, an interrupt the tracer asked
// for) are handled inside. A thread returned by Wait stays stopped until the
// caller resumes it.
//
// [Process.StopOthers] stops every other thread ("stop the world") and
// [Process.ResumeOthers] undoes it; stops that arrive meanwhile for reasons
// other than the interrupt are kept and handed out by later Waits, so nothing
// the target does is lost.
//
// # Signals during the tracer's work
//
// An injected system call or a single-step lets a thread pass where the
// kernel delivers its pending signals. Meanwhile the thread blocks every
// signal the work itself cannot raise, and one still taken is sent back to
// it when it is resumed, to come again as a signal-delivery-stop with its
// own siginfo: every signal reaches the target, in the kernel's order
// (owed.go). A signal interrupting a call that waits under a mask of its
// own (sigsuspend) needs that mask back before its delivery
// ([Thread.WaitMask]).
package tracer
