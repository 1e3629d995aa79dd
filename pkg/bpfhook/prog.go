package bpfhook

import (
	"encoding/binary"
	"fmt"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
)

// The program's context is the thread's struct pt_regs at the uprobe, as
// at the function's entry; these are its offsets (x86-64).
var argOffset = map[int]int16{1: 112, 2: 104, 3: 96} // rdi, rsi, rdx

const (
	offSp = 152
	// entrySize is an Entry as the program stores it: addr, rsp, rdi,
	// rsi, rdx, 8 bytes each.
	entrySize = 40
)

// The program's stack (r10 less):
//
//	-8   the block pointer, the key into blocks
//	-48  the Entry recorded for a stop (40 bytes)
//	-56  a key into state (u32)
//	-64  the thread's ids in memtrap's PID namespace: the thread's (the
//	     key into pending), then its process's (u32 each)
const (
	stPtr   = -8
	stEntry = -48
	stState = -56
	stTid   = -64
)

func decodeEntry(b []byte) Entry {
	u := func(i int) uint64 { return binary.LittleEndian.Uint64(b[8*i:]) }
	return Entry{Addr: u(0), Rsp: u(1), Rdi: u(2), Rsi: u(3), Rdx: u(4)}
}

// program is the BPF program of g's process, for the functions fns
// (their calls carried as calls say): the uprobe's cookie is the index of
// the function it is at.
//
//	if the process (in memtrap's PID namespace) is not g's: return
//	fn i: if size in a range, or ptr in blocks, or state[0]: stop
//	return
//	stop: pending[tid] = Entry; send SIGSTOP to the thread
//	      (if that fails: forget it, state[1]++)
func program(g *Gate, fns []uint64, calls []Call) (asm.Instructions, error) {
	in := append(inProcess(g.ns, g.tgid, stTid),
		asm.Mov.Reg(asm.R1, asm.R6),
		asm.FnGetAttachCookie.Call(),
		asm.Mov.Reg(asm.R8, asm.R0),
	)
	for i := range fns {
		in = append(in, asm.JEq.Imm(asm.R8, int32(i), fmt.Sprintf("fn%d", i)))
	}
	in = append(in, asm.Ja.Label("out"))
	for i, c := range calls {
		for _, a := range append(append([]int(nil), c.Size...), c.Ptr) {
			if _, ok := argOffset[a]; !ok && a != 0 {
				return nil, fmt.Errorf("argument %d is not one a gate records", a)
			}
		}
		in = append(in, asm.Mov.Imm(asm.R0, 0).WithSymbol(fmt.Sprintf("fn%d", i)))
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
					asm.Ja.Label("stop"),
					asm.Mov.Imm(asm.R0, 0).WithSymbol(next),
				)
			}
		}
		if c.Ptr != 0 {
			in = append(in,
				asm.LoadMem(asm.R1, asm.R6, argOffset[c.Ptr], asm.DWord),
				asm.StoreMem(asm.R10, stPtr, asm.R1, asm.DWord),
				asm.LoadMapPtr(asm.R1, g.blocks.FD()),
				asm.Mov.Reg(asm.R2, asm.R10),
				asm.Add.Imm(asm.R2, stPtr),
				asm.FnMapLookupElem.Call(),
				asm.JNE.Imm(asm.R0, 0, "stop"),
			)
		}
		in = append(in, asm.Ja.Label("all"))
	}
	in = append(in,
		asm.StoreImm(asm.R10, stState, 0, asm.Word).WithSymbol("all"),
		asm.LoadMapPtr(asm.R1, g.state.FD()),
		asm.Mov.Reg(asm.R2, asm.R10),
		asm.Add.Imm(asm.R2, stState),
		asm.FnMapLookupElem.Call(),
		asm.JEq.Imm(asm.R0, 0, "out"),
		asm.LoadMem(asm.R1, asm.R0, 0, asm.DWord),
		asm.JNE.Imm(asm.R1, 0, "stop"),

		asm.Mov.Imm(asm.R0, 0).WithSymbol("out"),
		asm.Return(),

		// The entry address: fns[cookie].
		asm.Mov.Imm(asm.R1, 0).WithSymbol("stop"),
	)
	for i, f := range fns {
		skip := fmt.Sprintf("addr%d", i)
		in = append(in,
			asm.JNE.Imm(asm.R8, int32(i), skip),
			asm.LoadImm(asm.R1, int64(f), asm.DWord),
			asm.Mov.Imm(asm.R0, 0).WithSymbol(skip),
		)
	}
	in = append(in,
		asm.StoreMem(asm.R10, stEntry, asm.R1, asm.DWord),
		asm.LoadMem(asm.R1, asm.R6, offSp, asm.DWord),
		asm.StoreMem(asm.R10, stEntry+8, asm.R1, asm.DWord),
	)
	for i := 1; i <= 3; i++ {
		in = append(in,
			asm.LoadMem(asm.R1, asm.R6, argOffset[i], asm.DWord),
			asm.StoreMem(asm.R10, stEntry+8+8*int16(i), asm.R1, asm.DWord))
	}
	in = append(in, stopThread(g.pending, stTid, stEntry, g.state, stState, 1)...)
	return in, nil
}

// stopThread ends a program that stops the thread: pending[key] = value
// (both on the stack, at these offsets from r10), then SIGSTOP to the
// thread; if either fails, the record goes and state[missed]++ (its key
// put on the stack at scratch). It returns 0, at the label "done".
func stopThread(pending *ebpf.Map, key, value int16, state *ebpf.Map, scratch int16, missed int32) asm.Instructions {
	return asm.Instructions{
		asm.LoadMapPtr(asm.R1, pending.FD()),
		asm.Mov.Reg(asm.R2, asm.R10),
		asm.Add.Imm(asm.R2, int32(key)),
		asm.Mov.Reg(asm.R3, asm.R10),
		asm.Add.Imm(asm.R3, int32(value)),
		asm.Mov.Imm(asm.R4, 0), // BPF_ANY
		asm.FnMapUpdateElem.Call(),
		asm.JNE.Imm(asm.R0, 0, "failed"),
		asm.Mov.Imm(asm.R1, 19), // SIGSTOP
		asm.FnSendSignalThread.Call(),
		asm.JEq.Imm(asm.R0, 0, "done"),

		asm.LoadMapPtr(asm.R1, pending.FD()).WithSymbol("failed"),
		asm.Mov.Reg(asm.R2, asm.R10),
		asm.Add.Imm(asm.R2, int32(key)),
		asm.FnMapDeleteElem.Call(),
		asm.StoreImm(asm.R10, scratch, int64(missed), asm.Word),
		asm.LoadMapPtr(asm.R1, state.FD()),
		asm.Mov.Reg(asm.R2, asm.R10),
		asm.Add.Imm(asm.R2, int32(scratch)),
		asm.FnMapLookupElem.Call(),
		asm.JEq.Imm(asm.R0, 0, "done"),
		asm.Mov.Imm(asm.R1, 1),
		asm.StoreXAdd(asm.R0, asm.R1, asm.DWord),

		asm.Mov.Imm(asm.R0, 0).WithSymbol("done"),
		asm.Return(),
	}
}

// inProcess begins a program of the threads of process tgid: r6 = the
// context; the thread's ids in memtrap's PID namespace ns on the stack at
// r10+ids (the thread's, then its process's, u32 each); to the label
// "out" for another process's threads.
func inProcess(ns pidNS, tgid int, ids int16) asm.Instructions {
	return asm.Instructions{
		asm.Mov.Reg(asm.R6, asm.R1),
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
