// Package agent holds memtrap's in-target agent, the fast engine's
// (package fastwatch): a SIGSEGV and SIGSYS handler, position-independent
// code with no libc (agent.c), that completes a trapped store inside the
// target with no ptrace stop, and records it in a ring memtrap reads. Its
// blob (agent.bin) is built from agent.c by build.sh (`make agent`) and
// committed, so that building memtrap needs no C compiler; TestBlob checks
// that it is what the source builds to.
//
// The blob is mapped at some address A; the shared Area (agent.h) follows
// at A + CodeSpan. RecipeFor makes the Recipe of a store memtrap's decoder
// decoded, for the stores the agent completes (MOVs and the ALU
// read-modify-writes, with their flags). Shared is memtrap's side of the
// Area, mapped from the same memfd as the target's: it takes the records in
// order (Peek, Done) and answers a thread's request for the recipe of a pc
// the agent has none for, and completes the stores the agent cannot do
// from the thread's frozen signal frame (Complete: decoded and emulated by
// package store with the frame's registers). For the system calls a seccomp
// filter traps (SIGSYS) it says which buffers the agent bounces and takes
// back what the kernel wrote (AnswerKernel, AppendKernel). Install, Arm and
// ArmSyscalls put the agent into a stopped target by injected system
// calls.
package agent

import (
	"bytes"
	_ "embed"
	"encoding/binary"
	"errors"
	"fmt"
)

//go:embed agent.bin
var blob []byte

// Layout constants: agent.h's.
const (
	Magic      = 0x746e656761746d6d // Area.Magic, "mmtagent"
	Version    = 10
	CodeSpan   = 0x2000 // the code, then the Area
	Pages      = 1024   // armed pages an Area holds, in order
	Recipes    = 4096   // recipe slots (open addressing by pc)
	Ring       = 1024   // records in the ring
	StackBytes = 4096   // stack bytes a Record copies from rsp-RedZone
	// RedZone is the x86-64 ABI's, the 128 bytes below rsp a leaf
	// function keeps its locals in: a Record's stack starts there.
	RedZone = 128
	// Disarmed and Dropped mark an Area.Prots entry: the target's
	// protection now, and unmapped or replaced for good.
	Disarmed    = 1 << 32
	Dropped     = 1 << 33
	NGReg       = 23 // ucontext's general registers
	headerMagic = 0x6d74676e
)

// Recipe ops (agent.h): the store, or a read-modify-write with its flags.
const (
	OpMov = iota
	OpAdd
	OpSub
	OpAnd
	OpOr
	OpXor
	OpInc
	OpDec
)

// Recipe sources and registers (agent.h).
const (
	SrcReg = 1    // the value is a register's
	SrcImm = 2    // the value is Recipe.Imm
	NoReg  = 0xff // no base or index register
	RIPRel = 0xfe // the base is the next instruction's address
)

// Recipe says what the store at PC writes: Width bytes at
// Disp + base + index*Scale, the value of register Reg (a ucontext gregs
// index) or Imm.
type Recipe struct {
	PC    uint64
	Len   uint8
	Width uint8
	Src   uint8
	Reg   uint8
	Base  uint8
	Index uint8
	Scale uint8
	Op    uint8 // Op*
	Disp  int64
	Imm   uint64
}

// Record is one write the agent completed.
type Record struct {
	Seq   uint64
	Tid   uint32
	Width uint32
	PC    uint64
	Addr  uint64
	Old   uint64
	New   uint64
	GRegs [NGReg]uint64
	Stack [StackBytes]byte // from StackAddr
}

// StackAddr is where the record's Stack starts: its rsp less the red zone.
func (r *Record) StackAddr() uint64 { return StackAddr(r.GRegs[gRSP]) }

// StackAddr is where a Record's stack starts for a thread at rsp.
func StackAddr(rsp uint64) uint64 { return rsp - RedZone }

// Request is a thread's question for the recipe of PC (agent.h's
// protocol: State goes ReqFree, ReqTaken, ReqPosted, ReqAnswered).
type Request struct {
	PC     uint64
	Tid    uint32
	State  uint32
	Kind   uint32 // Req*
	Result uint32 // 0 done
	UC     uint64 // the thread's ucontext_t in its signal frame
	FSBase uint64 // ReqComplete
	GSBase uint64
	// ReqKernelDone: the call's scratch and what it returned.
	Scratch uint64
	Ret     int64
	// ReqKernel, answered: scratch bytes to map (0: run the call as it
	// is) and the buffers moved there.
	Size uint64
	NOut uint32
	_    uint32
	Out  [Bounces]Bounce
}

// Bounce is one output buffer of a system call moved to the agent's
// scratch: the pointer in argument Arg points Size bytes at scratch+Off.
// With Flags BounceSet, argument Arg is Off itself: memory memtrap made
// (a vector call's lists, pointing at buffers of memtrap's), nothing
// copied.
type Bounce struct {
	Arg   uint32
	Flags uint32
	Off   uint64
	Size  uint64
}

// BounceSet marks a Bounce whose argument memtrap sets (agent.h).
const BounceSet = 1

// Bounces is how many buffers of one call the agent moves; TrapData the
// SECCOMP_RET_DATA of the filter's traps, which the agent's SIGSYS
// handler takes for its own.
const (
	Bounces  = 4
	TrapData = 0x6d61
)

// Request states, and how many requests an Area holds.
const (
	ReqFree     = 0
	ReqTaken    = 1
	ReqPosted   = 2
	ReqAnswered = 3
	NRequests   = 16
	ReqRecipe   = 1 // Kind: the recipe of PC, please
	ReqComplete = 2 // Kind: do the store at PC from the frame at UC
	// Kind: which buffers of the system call trapped at UC to bounce;
	// then, that call done, copy back what it wrote (agent.h).
	ReqKernel     = 3
	ReqKernelDone = 4
	// Kind: the call trapped at UC unmapped or replaced armed pages.
	ReqMM = 5
	// Kind: the madvise trapped at UC may have changed armed pages'
	// bytes; Scratch holds those before it (agent.h). The agent holds
	// the lock for memtrap.
	ReqMadvise = 6
)

// Sigaction is the kernel's struct sigaction.
type Sigaction struct {
	Handler, Flags, Restorer, Mask uint64
}

// Area is what memtrap and the agent share.
type Area struct {
	Magic    uint64
	Version  uint32
	MemFd    int32
	NPages   uint32
	Lock     uint32
	Waiting  uint32
	Served   uint32
	PageList [Pages]uint64
	Prots    [Pages]uint64 // each armed page's own protection
	Head     uint64
	Tail     uint64
	Misses   uint64
	Chained  uint64
	Asked    uint64
	Pid      uint64
	MPid     uint64    // memtrap's pid, as the target sees it
	MPidFd   int32     // the target's pidfd of memtrap, -1: none
	Gone     uint32    // memtrap is gone: the agent gave the pages back
	Token    uint64    // a word a forked child's copy of reads 0 (MADV_WIPEONFORK), 0: none
	Old      Sigaction // the target's own SIGSEGV action
	OldSys   Sigaction // and its SIGSYS action
	Requests [NRequests]Request
	Recipes  [Recipes]Recipe
	Records  [Ring]Record
}

// Slot is where the recipe for pc goes in an Area's table, or is: the
// agent's hash (agent.c's recipe), probing on.
func Slot(pc uint64) uint32 { return uint32((pc*0x9e3779b97f4a7c15)>>52) & (Recipes - 1) }

// Blob is the agent's code.
func Blob() []byte { return blob }

// Entries are the offsets, in the blob, of its SIGSEGV handler (for
// SA_SIGINFO) and of its sa_restorer.
type Entries struct{ Handler, Restorer uint32 }

// SyscallInsn is the offset in the blob of a `syscall` instruction (the
// restorer's): memtrap's injected calls run from there, where the agent's
// seccomp filter lets every call through.
func SyscallInsn() (uint32, error) {
	e, err := EntryPoints()
	if err != nil {
		return 0, err
	}
	if i := bytes.Index(blob[e.Restorer:min(int(e.Restorer)+16, len(blob))], []byte{0x0f, 0x05}); i >= 0 {
		return e.Restorer + uint32(i), nil
	}
	return 0, fmt.Errorf("%w: no syscall in its restorer", ErrBlob)
}

// ErrBlob: the embedded blob is not one (a build gone wrong).
var ErrBlob = errors.New("the agent's blob is damaged")

// EntryPoints reads the blob's header.
func EntryPoints() (Entries, error) {
	if len(blob) < 16 || binary.LittleEndian.Uint32(blob) != headerMagic {
		return Entries{}, ErrBlob
	}
	e := Entries{Handler: binary.LittleEndian.Uint32(blob[4:]), Restorer: binary.LittleEndian.Uint32(blob[8:])}
	if size := binary.LittleEndian.Uint32(blob[12:]); int(size) != len(blob) || e.Handler >= size || e.Restorer >= size {
		return Entries{}, fmt.Errorf("%w: header says %d bytes, handler at %d, restorer at %d, of %d", ErrBlob, size, e.Handler, e.Restorer, len(blob))
	}
	if len(blob) > CodeSpan {
		return Entries{}, fmt.Errorf("%w: %d bytes, past the %d its area leaves it", ErrBlob, len(blob), CodeSpan)
	}
	return e, nil
}
