// Package session is one watch of one process, as the command line asks
// for it: [Run] launches a program and watches it from its entry point to
// its end, [Attach] watches a running process until it exits or memtrap is
// told to let it go. [Options] are what the flags say; the session turns
// them into a pagewatch.Watch and turns each write the watch hands over
// into a report.Write.
//
// # What a session owns
//
//   - Regions: each [Spec] is resolved in the target once its libraries are
//     mapped (ELF symbols, module:NAME, NAME+OFF, DWARF variable paths).
//     A symbol not found yet is pending, like a gdb pending breakpoint,
//     and armed when a library that defines it is loaded.
//   - Images: a symbol table and an unwinder per address space. The first
//     process's is replaced when it executes another program; a followed
//     child that does so gets its own, kept until that child is gone. A
//     forked child uses its parent's, found through Watch.Parent.
//   - The report: one reporter over Options.Out, flushed whenever the
//     target runs on without a trapped write, before any other event and
//     at the end. The caller opens and closes Out.
//
// # Threads
//
// Run and Attach do their work on one locked OS thread (tracer.Locked):
// every ptrace request, and every callback the watch makes (Report, the
// finish it returns, Notify, OnExec, OnLibraries, OnUnmap, the idle
// flush), runs there, so the session needs no lock. The one goroutine
// besides it takes the signals that end a session, and touches only what
// is safe from anywhere: kill(2) to pass SIGTERM and SIGHUP on to a
// launched target, Watch.RequestDetach for an attached one.
//
// # A write, in two halves
//
// The watch hands each write over once. With a backtrace asked for,
// onReport runs while the writer is still stopped at the writing
// instruction: it unwinds the stack then, reading every stack page the
// frames span into a window that is then frozen. The finish it returns
// runs once the writer is on its way again, so it must not touch the
// writer's thread or read the stack the writer is now changing: it
// symbolizes the frames, reads parameters from the frozen window only,
// and copies the write into the report (pagewatch names the instruction
// only after the writer resumed).
package session
