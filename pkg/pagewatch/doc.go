// Package pagewatch watches regions of a traced process's memory and turns
// every write to them into a [Write]: by the target's instructions, by the
// kernel on its behalf (system calls, signal frames), in the process and,
// with Options.FollowForks, in its children.
//
// # Lifetime
//
// A [Watch] is built over a stopped [tracer.Process] with [New], armed with
// [Watch.Arm], driven by [Watch.Run] until the process exits or the caller
// asks for a detach ([Watch.RequestDetach], from any goroutine), and then
// disarmed: every page gets back the protection it had (or the one the target
// has set since), the debug registers are cleared, breakpoints and memtrap's
// scratch mapping are taken out. The region set may change at any stop
// ([Watch.AddRegions], [Watch.RemoveRegions]): only what those regions
// concern is armed or disarmed.
//
// With [Watch.SetGuard], the watch tells a guardian (package guard) what it
// has changed in the target each time that changes, before the target runs
// with it, so that the target survives memtrap's death.
//
// # Threads
//
// Every method but RequestDetach runs on the ptrace thread, like the
// tracer's, and so do the callbacks in [Options]. Options.Report sees each
// write once: while the writing thread is still stopped when Options.Unwind
// asks for it (its stack intact, to be unwound), and the finish it returns
// runs once the writer is on its way again, before the next write is
// reported. A Write's Thread and Regs are for Report only.
//
// # Engines
//
// How writes are caught is an engine's business; the Watch keeps what is
// common (regions, the stop loop, the system calls followed, the signal
// guard, the loader breakpoint, the followed children, the reports).
//
// The page engine (EnginePage) write-protects, with mprotect injected into
// the target, every page that holds a watched byte, remembering each page's
// own protection from /proc/PID/maps. Any size, any number of regions; the
// cost is a trap for every store to those pages, watched bytes or not.
//
// The hw engine (EngineHW) loads the x86 debug registers DR0-3 of every
// thread with up to four aligned 1, 2, 4 or 8-byte slots: nothing else
// traps. The CPU traps after the store, so the engine keeps a shadow copy of
// each region for the old bytes and finds the writing instruction by
// decoding back from RIP. Some hypervisors accept debug registers and never
// fire them; the engine is chosen only after [tracer.CheckDebugRegisters]
// says they fire (EngineAuto falls back to pages, EngineHW is refused).
//
// # A trapped write
//
// A SIGSEGV with SEGV_ACCERR on an armed page is the page engine's: the
// instruction at RIP is decoded (package x86/store) to learn which bytes it
// writes, the watched bytes it may change are snapshotted, a [Completer]
// lets the write happen (the [Emulator] does it through /proc/PID/mem; the
// [Stepper] single-steps it with the page open and the other threads
// stopped), and the bytes are compared. Correctness never rests on the
// decoder alone: the watched bytes on every page a write unprotects are
// compared before and after, so a change the decoder did not predict is
// still reported. A write to other data on the same page completes
// silently. Every signal that is not an engine's goes to the target
// unchanged.
//
// # Kernel writes
//
// The kernel does not fault on a page memtrap write-protects: a system call
// writing there fails with EFAULT instead, which the target would notice.
// With Options.KernelWrites the calls that write user memory (package
// sysout knows which, and how much) are seen at their entry. On the page
// engine a call that would write into an armed page is bounced: its output
// pointer is pointed at a scratch buffer memtrap maps in the target, filled
// with the real bytes; at the call's exit the bytes the kernel changed are
// copied to the real place and reported as a write by the kernel, and the
// argument register gets its value back. No page is unprotected, no other
// thread stopped, and a call that blocks blocks only its own thread. Calls
// that list their buffers in memory (readv, recvmsg, recvmmsg) get copies
// of their lists pointing at scratch buffers. On the hw engine the kernel
// writes the region directly; a call whose outputs cover one is followed to
// its exit and the region compared with its shadow.
//
// The target's own memory management over watched memory (mprotect,
// munmap, mremap, madvise, mmap MAP_FIXED) runs with the other threads
// stopped, and the books follow at its exit: a new protection is kept (and
// the page armed again if writable), an unmapped region is reported through
// Options.OnUnmap.
//
// With Options.SyscallFilter (targets memtrap launched and keeps until they
// exit) a seccomp filter stops only the calls whose pointer arguments come
// near watched memory; a call of a traced thread among them that the watch
// would let run as it is is let run by the listener at once (quick.go),
// the others stop. Without it (attach: a filter would outlive memtrap)
// the page engine follows every call of every thread, stopping at its
// entry and exit; the hw engine, which need not act before a call runs,
// has a BPF program on sys_exit stop only the calls the filter would have
// stopped, as they return (sysgate.go), where the kernel allows it.
//
// # Signal frames
//
// To run a handler the kernel pushes a signal frame (registers and the
// XSAVE image, a few KiB) below the thread's stack pointer or at the top of
// its alternate stack. On a write-protected page that write fails and the
// kernel kills the thread. So a caught signal about to be delivered near
// armed pages is delivered with those pages unprotected and every other
// thread stopped: one single-step with the signal builds the frame and stops
// at the handler's first instruction; the pages are armed again and the
// bytes the kernel wrote are reported as a kernel write for that signal.
//
// # The signal guard
//
// A trap memtrap causes is a fault the kernel forces on the thread: SIGSEGV
// (a write to an armed page), SIGTRAP (a single-step, a debug-register hit,
// a breakpoint). When the thread has that signal blocked at that moment (in
// a handler, or in a thread that blocks all signals, as Go's and the JVM's
// do at times), the kernel resets the process's handler to SIG_DFL before
// memtrap sees the stop, and the target's next own SIGSEGV would kill it.
// So the watch keeps a copy of the target's SIGSEGV and SIGTRAP actions and,
// after each trap it caused, puts a handler that vanished back (rt_sigaction
// injected with the copy) and blocks the signal again in the thread.
//
// # Forks, exec and libraries loaded later
//
// A forked child starts as a copy of its parent: the same pages armed, the
// same scratch area and loader breakpoint, the syscall filter. Without
// Options.FollowForks it gets its pages back and is let go (or, for the
// filter it inherited, nothing: the filter's calls wait for memtrap's
// listener, not a tracer (tracer/notify.go), except after a later
// SECCOMP_RET_TRACE filter, kept in pass-through until
// tracer.Process.ReleaseKept, or until it is to be traced by another:
// ptracecall.go);
// with it, its watch is a copy of
// the parent's over the child's tracer.Process, its writes carry its pid,
// and [Watch.Parent] tells who forked it. Debug registers are not
// inherited: the hw engine loads them again. After execve the regions are
// asked for again (Options.OnExec) in the new image, at its entry point.
//
// Symbols of libraries loaded later (dlopen) are resolved at an int3 over
// the `ret` of the dynamic loader's _dl_debug_state, which the loader calls
// after every change to its list of objects ([Watch.WatchLibraries]); memtrap
// emulates the ret, so the breakpoint is never lifted while other threads
// run.
package pagewatch
