// Package sysout knows which user memory each x86-64 Linux system call may
// write: the output buffers behind its pointer arguments and their sizes
// (Lookup, Call.Outputs), the buffers that calls like readv and recvmsg
// list in memory (LookupVec, VecCall.Read), and the books of a scratch area
// in the target (Scratch) where a follower redirects such buffers.
//
// A debugger that write-protects memory needs this: the kernel does not
// fault on a protected page, a call writing there fails with EFAULT, so
// the call must be seen at its entry and its buffer moved. The package is
// pure: it reads the target only through a Reader, never stops or changes
// it, and holds no state beyond a Scratch value's books. Its tables are
// read-only after initialization and safe from any goroutine.
package sysout
