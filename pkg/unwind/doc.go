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
// The CFI is decoded with pkg/dwarf/reader, and the DWARF expressions in
// it (DW_CFA_def_cfa_expression for realigned stacks and PLT entries,
// DW_CFA_expression and DW_CFA_val_expression in glibc's signal
// trampoline) are evaluated by pkg/dwarf/op, the evaluator pkg/symbols
// evaluates variable locations with: the value of a CFA rule is what its
// expression leaves on top of the stack.
//
// A return address points after the call, which may be the last
// instruction of a function (a call to a noreturn function), so frames
// other than frame 0 are looked up at PC-1. A frame interrupted by a signal
// is the exception: its PC is the next instruction to run, and
// [Frame.Signal] says so.
//
// # The registers of a frame
//
// Each [Frame] carries the registers the walk recovered for it
// ([Frame.Regs]) and the set of those it knows ([Frame.Valid]), as delve's
// stack frames do, so that the parameters of outer frames can be read
// from them. Frame 0 has every register. For a caller, the row's rules
// give the registers its callee saved (rbx, rbp, r12-r15 pushed in the
// prologue, read back from the stack); a callee-saved register without a
// rule still holds the caller's value; rsp is the CFA and rip the return
// address. The scratch registers (rax, rcx, rdx, rsi, rdi, r8-r11) are
// unknown in a caller unless a rule gives them, since the call may have
// clobbered them: a debugger that showed them would show the callee's
// values. A frame interrupted by a signal gets all of them back from the
// kernel's signal frame; one found through the frame pointer chain knows
// only rbp, rsp and rip. Unknown registers read as 0.
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
// [Modules] are closed. Section bytes are kept as read and CIEs parsed once.
// What a PC needs (its FDE and the CFI row that applies there) is kept per
// module and link-time address, up to 4096 PCs a module: the same store
// sites write a hot region over and over, and a frame seen before costs a
// map lookup and the reads of its saved registers. An Unwinder is safe for concurrent
// use, and a warm unwind allocates only the returned slice. Nothing in a
// returned Frame refers back to the Unwinder.
package unwind
