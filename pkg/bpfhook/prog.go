package bpfhook

import (
	"encoding/binary"
	"fmt"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
)

// The program's context is the thread's struct pt_regs at the uprobe, as
// at the function's entry (or, at a return, as the function returned);
// these are its offsets (x86-64).
var argOffset = map[int]int16{1: 112, 2: 104, 3: 96} // rdi, rsi, rdx

const (
	offAx = 80
	offIP = 128
	offSp = 152
	// entrySize is an Entry as the program stores it, 8 bytes each: addr,
	// rsp, rdi, rsi, rdx (as at the entry), ret (1: the stop is at the
	// return), rax (at the return), the return address (at the entry).
	entrySize = 64
)

// The program's stack (r10 less):
//
//	-8   the block pointer, the key into blocks
//	-72  the Entry recorded for a stop (64 bytes)
//	-80  a key into state (u32)
//	-88  the thread's ids in memtrap's PID namespace: the thread's (the
//	     key into pending and calls), then its process's (u32 each)
const (
	stPtr   = -8
	stEntry = -72
	stState = -80
	stTid   = -88
)

func decodeEntry(b []byte) Entry {
	u := func(i int) uint64 { return binary.LittleEndian.Uint64(b[8*i:]) }
	return Entry{Addr: u(0), Rsp: u(1), Rdi: u(2), Rsi: u(3), Rdx: u(4), Ret: u(5) != 0, Rax: u(6), RetAddr: u(7)}
}

// program is the BPF program of g's process, for the functions fns
// (their calls carried as calls say): the uprobe's cookie is the index of
// the function it is at.
//
//	if the process (in memtrap's PID namespace) is not g's: out
//	if at a return (session, the context's ip is not the uprobe's): ret
//	if state[0]: stop
//	fn i: if ptr in blocks: stop; if size in a range: sized
//	out: return 1 (session: no return probe), else 0
//	stop: pending[tid] = Entry; send SIGSTOP to the thread
//	      (if that fails: forget it, state[1]++); return as out
//	sized: without a session, stop. With one: calls[tid] = Entry,
//	      unless calls[tid] is a call this one is nested in (its rsp
//	      above this one's); return 0, for the return probe
//	ret: if calls[tid] is this return's call (its rsp 8 below this
//	      rsp): pending[tid] = it, with ret and rax; forget calls[tid];
//	      send SIGSTOP as stop does
//
// In a session (BPF_TRACE_UPROBE_SESSION) the program runs at the entry
// and, where its entry run returned 0, once more at that call's return.
func program(g *Gate, fns []uint64, calls []Call, session bool) (asm.Instructions, error) {
	outRet := int32(0)
	if session {
		outRet = 1
	}
	in := inProcess(g.ns, g.tgid, stTid)
	in = append(in,
		asm.Mov.Reg(asm.R1, asm.R6),
		asm.FnGetAttachCookie.Call(),
		asm.Mov.Reg(asm.R8, asm.R0),
		// r9 = the entry address: fns[cookie]; r2 = where its uprobe
		// is (a session's entry run has its ip there).
		asm.Mov.Imm(asm.R9, 0),
		asm.Mov.Imm(asm.R2, 0),
	)
	for i, f := range fns {
		skip := fmt.Sprintf("addr%d", i)
		probe := f
		if calls[i].Probe != 0 {
			probe = calls[i].Probe
		}
		in = append(in,
			asm.JNE.Imm(asm.R8, int32(i), skip),
			asm.LoadImm(asm.R9, int64(f), asm.DWord),
			asm.LoadImm(asm.R2, int64(probe), asm.DWord),
			asm.Mov.Imm(asm.R0, 0).WithSymbol(skip),
		)
	}
	if session {
		in = append(in,
			asm.LoadMem(asm.R1, asm.R6, offIP, asm.DWord),
			asm.JNE.Reg(asm.R1, asm.R2, "ret"),
		)
	}
	in = append(in, asm.StoreImm(asm.R10, stState, 0, asm.Word))
	in = append(in, mapLookup(g.state, stState, "")...)
	in = append(in,
		asm.JEq.Imm(asm.R0, 0, "fns"),
		asm.LoadMem(asm.R1, asm.R0, 0, asm.DWord),
		asm.JNE.Imm(asm.R1, 0, "stop"),
		asm.Mov.Imm(asm.R0, 0).WithSymbol("fns"),
	)
	for i := range fns {
		in = append(in, asm.JEq.Imm(asm.R8, int32(i), fmt.Sprintf("fn%d", i)))
	}
	in = append(in, asm.Ja.Label("out"))
	sized := "stop"
	if session {
		sized = "sized"
	}
	for i, c := range calls {
		for _, a := range append(append([]int(nil), c.Size...), c.Ptr) {
			if _, ok := argOffset[a]; !ok && a != 0 {
				return nil, fmt.Errorf("argument %d is not one a gate records", a)
			}
		}
		in = append(in, asm.Mov.Imm(asm.R0, 0).WithSymbol(fmt.Sprintf("fn%d", i)))
		if c.Ptr != 0 {
			in = append(in,
				asm.LoadMem(asm.R1, asm.R6, argOffset[c.Ptr], asm.DWord),
				asm.StoreMem(asm.R10, stPtr, asm.R1, asm.DWord),
			)
			in = append(in, mapLookup(g.blocks, stPtr, "")...)
			in = append(in,
				asm.JNE.Imm(asm.R0, 0, "stop"),
			)
		}
		if len(c.Size) > 0 {
			in = append(in, asm.LoadMem(asm.R7, asm.R6, argOffset[c.Size[0]], asm.DWord))
			for _, a := range c.Size[1:] {
				in = append(in, asm.LoadMem(asm.R1, asm.R6, argOffset[a], asm.DWord), asm.Mul.Reg(asm.R7, asm.R1))
			}
			if c.PageRound {
				in = append(in, asm.Add.Imm(asm.R7, 4095), asm.And.Imm(asm.R7, -4096))
			}
			for j, r := range g.ranges {
				next := fmt.Sprintf("fn%d.range%d", i, j+1)
				in = append(in,
					asm.LoadImm(asm.R1, int64(r[0]), asm.DWord),
					asm.JLT.Reg(asm.R7, asm.R1, next),
					asm.LoadImm(asm.R1, int64(r[1]), asm.DWord),
					asm.JGT.Reg(asm.R7, asm.R1, next),
					asm.Ja.Label(sized),
					asm.Mov.Imm(asm.R0, 0).WithSymbol(next),
				)
			}
		}
		in = append(in, asm.Ja.Label("out"))
	}
	in = append(in,
		asm.Mov.Imm(asm.R0, outRet).WithSymbol("out"),
		asm.Return(),
	)
	// stop: the Entry from the context.
	in = append(in, entryFromContext("stop")...)
	in = append(in, stopThread(g.pending, stTid, stEntry, g.state, stState, 1, outRet, "stop.")...)
	if !session {
		return in, nil
	}
	in = append(in, entryFromContext("sized")...)
	in = append(in, mapLookup(g.calls, stTid, "")...)
	in = append(in,
		asm.JEq.Imm(asm.R0, 0, "record"),
		// Nested in the call recorded (an allocator calling itself):
		// that call's return is the one to see.
		asm.LoadMem(asm.R1, asm.R0, 8, asm.DWord),
		asm.LoadMem(asm.R2, asm.R6, offSp, asm.DWord),
		asm.JGT.Reg(asm.R1, asm.R2, "out"),
		asm.LoadMapPtr(asm.R1, g.calls.FD()).WithSymbol("record"),
		asm.Mov.Reg(asm.R2, asm.R10),
		asm.Add.Imm(asm.R2, stTid),
		asm.Mov.Reg(asm.R3, asm.R10),
		asm.Add.Imm(asm.R3, stEntry),
		asm.Mov.Imm(asm.R4, 0), // BPF_ANY
		asm.FnMapUpdateElem.Call(),
		// No room: stop at the entry instead.
		asm.JNE.Imm(asm.R0, 0, "stop.send"),
		asm.Mov.Imm(asm.R0, 0),
		asm.Return(),

		// ret: the call recorded at the entry, if this is its return.
	)
	in = append(in, mapLookup(g.calls, stTid, "ret")...)
	in = append(in,
		asm.JEq.Imm(asm.R0, 0, "ret.out"),
		asm.LoadMem(asm.R1, asm.R0, 8, asm.DWord),
		asm.Add.Imm(asm.R1, 8),
		asm.LoadMem(asm.R2, asm.R6, offSp, asm.DWord),
		asm.JNE.Reg(asm.R1, asm.R2, "ret.out"),
	)
	for _, i := range []int16{0, 1, 2, 3, 4, 7} {
		in = append(in,
			asm.LoadMem(asm.R1, asm.R0, 8*i, asm.DWord),
			asm.StoreMem(asm.R10, stEntry+8*i, asm.R1, asm.DWord))
	}
	in = append(in,
		asm.Mov.Imm(asm.R1, 1),
		asm.StoreMem(asm.R10, stEntry+40, asm.R1, asm.DWord),
		asm.LoadMem(asm.R1, asm.R6, offAx, asm.DWord),
		asm.StoreMem(asm.R10, stEntry+48, asm.R1, asm.DWord),
		asm.LoadMapPtr(asm.R1, g.calls.FD()),
		asm.Mov.Reg(asm.R2, asm.R10),
		asm.Add.Imm(asm.R2, stTid),
		asm.FnMapDeleteElem.Call(),
		asm.Ja.Label("ret.send"),
		asm.Mov.Imm(asm.R0, 0).WithSymbol("ret.out"),
		asm.Return(),
	)
	in = append(in, stopThread(g.pending, stTid, stEntry, g.state, stState, 1, 0, "ret.")...)
	return in, nil
}

// mapLookup looks key (on the stack, at that offset from r10) up in m:
// r0 is its value's address, or 0. label, if any, names the first
// instruction.
func mapLookup(m *ebpf.Map, key int16, label string) asm.Instructions {
	in := asm.Instructions{
		asm.LoadMapPtr(asm.R1, m.FD()),
		asm.Mov.Reg(asm.R2, asm.R10),
		asm.Add.Imm(asm.R2, int32(key)),
		asm.FnMapLookupElem.Call(),
	}
	if label != "" {
		in[0] = in[0].WithSymbol(label)
	}
	return in
}

// entryFromContext stores the call's Entry as at its entry on the stack
// (r9 its entry address), beginning at label.
func entryFromContext(label string) asm.Instructions {
	in := asm.Instructions{
		asm.StoreMem(asm.R10, stEntry, asm.R9, asm.DWord).WithSymbol(label),
		asm.LoadMem(asm.R1, asm.R6, offSp, asm.DWord),
		asm.StoreMem(asm.R10, stEntry+8, asm.R1, asm.DWord),
	}
	for i := 1; i <= 3; i++ {
		in = append(in,
			asm.LoadMem(asm.R1, asm.R6, argOffset[i], asm.DWord),
			asm.StoreMem(asm.R10, stEntry+8+8*int16(i), asm.R1, asm.DWord))
	}
	// The return address as the call has it, before any uprobe
	// session's return probe (another gate's, this probe's) puts the
	// kernel's trampoline there: zeroed if unreadable.
	return append(in,
		asm.Mov.Imm(asm.R1, 0),
		asm.StoreMem(asm.R10, stEntry+40, asm.R1, asm.DWord),
		asm.StoreMem(asm.R10, stEntry+48, asm.R1, asm.DWord),
		asm.Mov.Reg(asm.R1, asm.R10),
		asm.Add.Imm(asm.R1, stEntry+56),
		asm.Mov.Imm(asm.R2, 8),
		asm.LoadMem(asm.R3, asm.R6, offSp, asm.DWord),
		asm.FnProbeReadUser.Call())
}

// stopThread ends a program that stops the thread: pending[key] = value
// (both on the stack, at these offsets from r10), then SIGSTOP to the
// thread; if either fails, the record goes and state[missed]++ (its key
// put on the stack at scratch). It returns ret. Its labels begin with
// prefix: prefix+"send" is its first instruction.
func stopThread(pending *ebpf.Map, key, value int16, state *ebpf.Map, scratch int16, missed, ret int32, prefix string) asm.Instructions {
	return asm.Instructions{
		asm.LoadMapPtr(asm.R1, pending.FD()).WithSymbol(prefix + "send"),
		asm.Mov.Reg(asm.R2, asm.R10),
		asm.Add.Imm(asm.R2, int32(key)),
		asm.Mov.Reg(asm.R3, asm.R10),
		asm.Add.Imm(asm.R3, int32(value)),
		asm.Mov.Imm(asm.R4, 0), // BPF_ANY
		asm.FnMapUpdateElem.Call(),
		asm.JNE.Imm(asm.R0, 0, prefix+"failed"),
		asm.Mov.Imm(asm.R1, 19), // SIGSTOP
		asm.FnSendSignalThread.Call(),
		asm.JEq.Imm(asm.R0, 0, prefix+"done"),

		asm.LoadMapPtr(asm.R1, pending.FD()).WithSymbol(prefix + "failed"),
		asm.Mov.Reg(asm.R2, asm.R10),
		asm.Add.Imm(asm.R2, int32(key)),
		asm.FnMapDeleteElem.Call(),
		asm.StoreImm(asm.R10, scratch, int64(missed), asm.Word),
		asm.LoadMapPtr(asm.R1, state.FD()),
		asm.Mov.Reg(asm.R2, asm.R10),
		asm.Add.Imm(asm.R2, int32(scratch)),
		asm.FnMapLookupElem.Call(),
		asm.JEq.Imm(asm.R0, 0, prefix+"done"),
		asm.Mov.Imm(asm.R1, 1),
		asm.StoreXAdd(asm.R0, asm.R1, asm.DWord),

		asm.Mov.Imm(asm.R0, ret).WithSymbol(prefix + "done"),
		asm.Return(),
	}
}

// inProcess begins a program of the threads of process tgid: r6 = the
// context; the thread's ids in memtrap's PID namespace ns on the stack at
// r10+ids (the thread's, then its process's, u32 each); to the label
// "out" for another process's threads.
func inProcess(ns pidNS, tgid int, ids int16) asm.Instructions {
	return append(asm.Instructions{asm.Mov.Reg(asm.R6, asm.R1)}, inProcessFrom(ns, tgid, ids)...)
}

// inProcessFrom is inProcess with r6 set already; it leaves r6 to r9 as
// they were.
func inProcessFrom(ns pidNS, tgid int, ids int16) asm.Instructions {
	return asm.Instructions{
		asm.LoadImm(asm.R1, int64(ns.dev), asm.DWord),
		asm.LoadImm(asm.R2, int64(ns.ino), asm.DWord),
		asm.Mov.Reg(asm.R3, asm.R10),
		asm.Add.Imm(asm.R3, int32(ids)),
		asm.Mov.Imm(asm.R4, 8),
		asm.FnGetNsCurrentPidTgid.Call(),
		asm.JNE.Imm(asm.R0, 0, "out"),
		asm.LoadMem(asm.R0, asm.R10, ids+4, asm.Word),
		asm.JNE.Imm(asm.R0, int32(tgid), "out"),
	}
}
