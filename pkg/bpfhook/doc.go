// Package bpfhook lets the kernel decide which calls of a function stop a
// traced process: a uprobe at the function's entry runs a small BPF
// program that looks at the call's arguments and, only for a call that
// matters, makes the thread stop for its tracer. Every other call costs a
// uprobe, with no ptrace stop and no context switch to memtrap.
//
// # A gate
//
// A [Gate] is the probes of one process (its tgid, checked by every
// program, and one perf uprobe per function scoped to that pid). A call
// matters when its requested size is in one of the gate's ranges, when
// the block pointer it is given is one the tracer put in the gate's
// watched set ([Gate.Watch]), or always, while [Gate.StopAll] is on.
//
// # A stop
//
// For a call that matters the program records the call (the function's
// entry address and the registers that carry its arguments and return
// address: rsp, rdi, rsi, rdx, as they were at the entry) in the pending
// map under the thread's id, then sends the thread SIGSTOP with
// bpf_send_signal_thread. The signal arrives as the thread goes back to
// user space, after the probed instruction ran (the entry's, or the one
// [Call.Probe] names, before which every call runs the same few
// instructions): the tracer sees
// a signal-delivery-stop of SIGSTOP, si_code SI_KERNEL, with a pending
// record for the thread ([Gate.Owns] takes it out and returns it),
// handles the call and resumes the thread without the signal. The target
// never sees it.
// SIGSTOP because nothing can block it: another signal could stay pending
// in a thread that blocks it, and the call would go by unseen.
//
// # A stop at the return
//
// An allocation that matters for its size alone needs memtrap at its
// return only (the block's address), not at its entry too. Where the
// kernel has uprobe sessions (BPF_TRACE_UPROBE_SESSION, Linux 6.13) the
// program runs at the entry and, for the calls its entry run returned 0
// for, once more at their return: the entry records the call in the calls
// map by thread (unless the thread is inside a call recorded already: an
// allocator calling itself), and the return, if it is that call's (its rsp
// one word above the recorded slot), moves it to pending with the result
// and stops the thread as above. One stop instead of two, and no
// trampoline of memtrap's. The kernel's uretprobe trampoline may still
// hold the thread when it stops (x86's uretprobe syscall returns to it,
// before its last pop r11, pop rcx, ret): the tracer completes those
// itself (hook.Set). Calls that need their entry (a watched block given,
// or every call while StopAll) stop there as before. [Gate.EntryOnly]
// takes the entry stop for every call, as where there are no sessions.
//
// # System calls
//
// A [SysGate] does the same for a process's system calls, with one program
// on the sys_exit tracepoint (tp_btf) for all of them: a call whose number
// and pointer arguments match the gate's rules (those of memtrap's
// seccomp filter) stops as it returns, its number in the pending map. It
// cannot stop a call before it runs: it serves a tracer that need not
// act before.
//
// # Lifetime
//
// A Gate belongs to one process and is used from one goroutine. [Gate.Close]
// closes the links (the kernel takes its breakpoints out of the process),
// the programs and the maps; a gate of a process that executes a new image
// is closed and a new one made for the new image.
package bpfhook
