// Package store says what an x86-64 instruction writes to memory, and
// performs the common stores on paper, so that a debugger can report a
// write exactly and complete it without letting the CPU run it.
//
// [Decode] turns the bytes at RIP and the registers into a [Store]: the
// range of memory the instruction writes, or Known false when the decoder
// cannot tell, and then the caller must take a path that does not trust
// it. [WritesMemory] exposes the table of writing ops behind it. [Emulate]
// goes one step further for the instructions listed below: from a Store,
// the registers and a [Target] to read memory and vector registers from,
// it computes the bytes written and the registers after, an [Emulation]
// that the caller applies.
//
// # Pure
//
// Nothing here traces, stops or writes a process: registers come in as a
// unix.PtraceRegs, memory and vector registers through Target, and the
// result goes back to the caller. So all of it is tested from byte strings
// and a fake Target, and against the CPU in a traced harness (the tests
// alone import pkg/tracer).
//
// # Concurrency
//
// Decode and Emulate work on their arguments and on the values they
// return; all they share is facts about this CPU (its feature bits, and
// the XSAVE layout pkg/x86/xsave reads once), so any goroutines may call
// them at once. A Store or an Emulation is its caller's alone. Emulate
// calls Target's methods on the caller's goroutine
// and only until it returns: a Target bound to a ptrace thread works when
// Emulate is called from that thread. Emulate reads a read-modify-write's
// operand and the caller writes the result later, so the two together are
// as atomic as the CPU's (LOCKed or not) only if nothing else can write
// that memory in between: the caller's to ensure.
//
// # What is emulated
//
// Emulate does:
//   - MOV, MOVNTI and MOVBE from a general or segment register or an
//     immediate, and SETcc;
//   - ADD, ADC, SUB, SBB, AND, OR, XOR, INC, DEC, NEG and NOT on memory,
//     with the flags the CPU sets, LOCKed or not; XCHG, XADD and CMPXCHG;
//   - PUSH of a register, an immediate or memory, and near CALL (a watch
//     on a variable on the stack traps every push and call onto its page);
//   - STOS and MOVS, with or without REP: all RCX elements at once, up to
//     1 MiB (a longer one is done for its first MiB and left on its
//     instruction, with RCX, RDI and RSI where an interrupt would leave
//     them); overlapping MOVS element by element;
//   - the SSE, AVX and AVX-512 stores of a vector register or a part of
//     one (MOVAPS ... VMOVDQU64, MOVQ/MOVD/MOVSS/MOVSD, MOVLPS/MOVHPS,
//     PEXTR*, VEXTRACT*), the AVX-512 moves under a write mask too (the
//     selected elements only: glibc's memset and memcpy end with those),
//     and MOVQ/MOVD/MOVNTQ from MMX.
//
// Vector registers are read (Target.FPRegs, or Target.XState as far as
// the register's XSAVE component) only for vector stores.
//
// It refuses, with a short reason fit for counting ("op SHL",
// "misaligned"): stores the decoder could not describe (but for a masked
// AVX-512 store, whose elements it finds out itself); other instructions
// (shifts, BTS/BTR/BTC, CMPXCHG8B/16B...); aligned vector stores to a
// misaligned address (the CPU raises #GP); vector stores this CPU has not
// the extension for; stores with TF or AC set; and REP string ops with a
// 32-bit address size.
package store
