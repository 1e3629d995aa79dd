// Package unwind turns the registers of a stopped thread into a backtrace.
// It reads ELF files and the target's memory through small interfaces and
// knows nothing of ptrace, so it is tested over stacks recorded to files.
//
// # How a frame is unwound
//
// Most code on a Linux system (glibc, anything built with -O2) keeps no
// frame pointer, so the package follows the call frame information (CFI)
// the compiler emits: .eh_frame, which is loaded with the code and found
// through the binary search table of .eh_frame_hdr (or, without one, an
// index the package sorts once), and .debug_frame, the same tables in
// DWARF's own flavour, which code built with -fno-asynchronous-unwind-tables
// -g carries instead. For each frame the matching FDE's CFA program is run
// up to the frame's PC; its row says how to compute the canonical frame
// address (CFA) and where the caller's registers were saved. The caller's
// rsp is the CFA, and its rip the saved return address.
//
// A return address points after the call, which may be the last
// instruction of a function (a call to a noreturn function), so frames
// other than frame 0 are looked up at PC-1. A frame interrupted by a signal
// is the exception: its PC is the next instruction to run, and
// [Frame.Signal] says so.
//
// # Signal frames
//
// A signal handler returns to a trampoline that calls rt_sigreturn. When a
// frame's PC is in it, the interrupted registers are read from the kernel's
// struct rt_sigframe on the stack: the trampoline runs with rsp at its
// struct ucontext, whose uc_mcontext starts 40 bytes in. The trampoline is
// recognised by its code (glibc's __restore_rt: "mov $15,%rax; syscall"),
// as gdb does, or by the 'S' augmentation of its CIE, in which case glibc's
// CFI for it is followed instead.
//
// # Without CFI
//
// Where no CFI covers a PC (hand-written assembly, JIT code, stripped
// files), the frame pointer chain is followed: CFA = rbp+16, the return
// address at [rbp+8], the caller's rbp at [rbp]. In frame 0 this is a
// heuristic: a function stopped before its "push %rbp; mov %rsp,%rbp", or
// one built without frame pointers, still has its caller's rbp, and that
// caller is missing from the backtrace. Frames further up are reached by
// return, so their rbp is their own if they keep frame pointers at all.
//
// # When the walk stops
//
// [Unwinder.Unwind] returns the frames found up to the first of: a zero or
// unreadable return address; a return address the CFI marks undefined, as
// glibc's _start and thread entry points do; a CFA that does not move up
// the stack (except across a signal frame, where sigaltstack may switch
// stacks); and the frame limit. Malformed CFI and unreadable memory end the
// walk early; they never panic or loop.
//
// # Caching, lifetime and concurrency
//
// An [Unwinder] parses a module's CFI the first time a PC in it is
// unwound, and keeps it, keyed by the module's path and *elf.File, for the
// Unwinder's lifetime: create a new Unwinder when the files behind its
// [Modules] are closed. Section bytes are kept as read and FDEs decoded on
// each lookup; CIEs are parsed once. An Unwinder is safe for concurrent
// use, and a warm unwind allocates only the returned slice.
package unwind
