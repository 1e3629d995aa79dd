// Package pagewatch watches regions of a traced process's memory by
// write-protecting the pages that hold them, and turns the resulting faults
// into Write events.
//
// # Lifetime
//
// A [Watch] is built over a stopped [tracer.Process] with [New], armed with
// [Watch.Arm], driven by [Watch.Run] until the process exits or the caller
// asks for a detach ([Watch.RequestDetach], from any goroutine), and then
// disarmed: every page gets back the protection it had (or the one the target
// has set since). All other methods run on the ptrace thread, like the
// tracer's.
//
// # A trapped write
//
// A SIGSEGV with SEGV_ACCERR on an armed page is ours: the instruction at RIP
// is decoded ([store.Decode]) to learn which bytes it writes, the watched bytes
// it may change are snapshotted, a [Completer] lets the write happen, and the
// bytes are read again. A write that touches a watched byte becomes a [Write]
// handed once to Options.Report: while the writing thread is still stopped
// when Options.Unwind asks for it (so that its stack can be unwound), and
// the rest of the report (the finish Report returns) once the writer runs
// again. A write to other data on the same page completes silently. Every
// other signal goes to the target unchanged.
//
// Correctness never rests on the decoder alone: the watched bytes on every
// page a write unprotects are compared before and after, so a change the
// decoder did not predict is still reported.
package pagewatch
