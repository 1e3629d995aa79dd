// Package hook stops a traced process at the entry of chosen functions and
// at their return, the way a debugger's breakpoints and the kernel's
// uprobes do, without ever lifting a breakpoint while other threads run.
//
// # The code page
//
// [New] maps one page of code of memtrap's own in the target (PROT_READ|
// PROT_EXEC, written through /proc/PID/mem):
//
//	+0   int3                      the return trampoline
//	+32  insn; jmp [rip+0]; .quad  one slot per breakpoint: the instruction
//	+64  ...                       the int3 displaced, copied out of line,
//	                               and a jump to the one after it
//
// # A breakpoint
//
// [Set.Add] puts an int3 over the first byte of a function. At a hit the
// thread's RIP goes back to the function's entry and the HitFunc runs; the
// thread then goes on in the instruction's slot, which does what the
// displaced instruction would have done and jumps back: no second stop, no
// byte put back, so another thread reaching the breakpoint meanwhile traps
// as well and is handled in turn. An instruction that does not do the same
// at another address (RIP-relative, a branch) is instead single-stepped in
// place with every other thread stopped.
//
// # A return
//
// [Set.Return], called at a hit, replaces the return address on the stack
// with the trampoline's and remembers the real one, keyed by thread and
// stack slot: recursion, threads and an allocator that calls itself each
// find their own. At the trampoline's int3 the thread continues at the
// real return address and the ReturnFunc sees the result.
//
// # A gate
//
// With [Set.UseGate], [Set.AddGated] puts a function behind the kernel's
// uprobes instead (package bpfhook), opened at [Set.OpenGate]: a call the
// gate's BPF program does not let through runs on with no stop; one it
// does stops with a SIGSTOP just past the instruction the uprobe is on
// (the entry's, or a few bytes further: the first the kernel need not
// single-step, probeSite), and the HitFunc sees the call as it was at the
// entry (the registers the program recorded there), as at a breakpoint.
// That is why a function whose first instruction writes an argument
// register or one the unwinder follows gets an int3 instead.
// [Set.Return] works the same from either stop.
//
// # Lifetime and threads
//
// A Set belongs to one process. [Set.Remove] takes every breakpoint out,
// gives every awaited call its return address back and closes the gate,
// dropping the SIGSTOPs it sent that are still on their way (detach);
// [Set.Release] takes them out of a forked child that is let go (the
// kernel takes its own out of the child as the child runs into them);
// [Set.Forget] drops them when the process executes a new image or ends.
// Every method runs on the ptrace thread, like the tracer's.
package hook
