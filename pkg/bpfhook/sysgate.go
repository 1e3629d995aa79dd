package bpfhook

import (
	"errors"
	"fmt"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/features"
	"github.com/cilium/ebpf/link"
	"github.com/memtrap/memtrap/pkg/tracer"
	"golang.org/x/sys/unix"
)

// A SysGate makes a process's system calls that match rules stop for the
// tracer as they return, with no stop at all for the others: a BPF
// program on the raw tracepoint sys_exit, for the process's tgid only,
// sends the thread SIGSTOP (as a Gate does) after recording the call's
// number in the pending map. The signal arrives before the thread runs
// another instruction of its own: the tracer sees the call's result, its
// arguments still in their registers (the kernel keeps them), and
// resumes without the signal.
//
// It can only tell the tracer after the call ran: it serves a tracer that
// need not act before (memtrap's hw engine, whose watched memory the
// kernel writes unhindered). Calling it costs a raw tracepoint; closing
// it leaves nothing in the process.
type SysGate struct {
	tgid           int
	ns             pidNS
	pending, state *ebpf.Map
	quiet          *ebpf.Map // threads whose calls do not stop (Quiet)
	prog           *ebpf.Program
	link           link.Link
}

// The sys_exit program's stack (r10 less): the thread's ids as in a
// Gate's program (the tid is the key into pending), and the call's number
// (the value).
const (
	sgTid = -64 // and the tgid at -60
	sgNr  = -72
)

// sgArg is where argument i of the call is in the thread's pt_regs.
var sgArg = [6]int16{112, 104, 96, 56, 72, 64} // rdi, rsi, rdx, r10, r8, r9

// ErrNoSysGate: this kernel does not run a SysGate.
var ErrNoSysGate = errors.New("BPF programs on sys_exit are unavailable")

// SysGateAvailable says whether this kernel runs a SysGate (ErrNoSysGate
// when it does not, with the reason).
func SysGateAvailable() error {
	for _, fn := range []asm.BuiltinFunc{asm.FnSendSignalThread, asm.FnGetNsCurrentPidTgid, asm.FnMapUpdateElem} {
		if err := features.HaveProgramHelper(ebpf.RawTracepoint, fn); err != nil {
			if errors.Is(err, ebpf.ErrNotSupported) {
				return fmt.Errorf("%w: %v", ErrNoSysGate, err)
			}
			return fmt.Errorf("%w: probing the kernel: %v", ErrNoSysGate, err)
		}
	}
	return nil
}

// NewSysGate makes the maps of a gate of process tgid's system calls;
// Load gives it its rules.
func NewSysGate(tgid int) (*SysGate, error) {
	ns, err := ownPIDNS()
	if err != nil {
		return nil, err
	}
	g := &SysGate{tgid: tgid, ns: ns}
	if g.pending, err = ebpf.NewMap(&ebpf.MapSpec{Type: ebpf.Hash, KeySize: 4, ValueSize: 8, MaxEntries: maxPending}); err != nil {
		return nil, fmt.Errorf("%w: creating the map of stopped calls: %v", ErrNoSysGate, err)
	}
	if g.state, err = newState(1); err != nil {
		g.Close()
		return nil, fmt.Errorf("%w: creating the gate's state: %v", ErrNoSysGate, err)
	}
	if g.quiet, err = ebpf.NewMap(&ebpf.MapSpec{Type: ebpf.Hash, KeySize: 4, ValueSize: 1, MaxEntries: maxPending}); err != nil {
		g.Close()
		return nil, fmt.Errorf("%w: creating the gate's quiet threads: %v", ErrNoSysGate, err)
	}
	return g, nil
}

// Load makes the calls rules match the ones that stop (a rule as a
// seccomp filter takes it: the call's number, and one of the pointer
// arguments in a range, or none to stop every such call), in place of
// the rules before. The new program is attached before the old one goes:
// no call goes by unseen between.
func (g *SysGate) Load(rules []tracer.FilterRule) error {
	insns, err := sysProgram(g, rules)
	if err != nil {
		return err
	}
	prog, err := ebpf.NewProgram(&ebpf.ProgramSpec{Type: ebpf.Tracing, AttachType: ebpf.AttachTraceRawTp,
		AttachTo: "sys_exit", Instructions: insns, License: "GPL"})
	if err != nil {
		return fmt.Errorf("%w: loading the system call program: %v", ErrNoSysGate, err)
	}
	l, err := link.AttachTracing(link.TracingOptions{Program: prog})
	if err != nil {
		prog.Close()
		return fmt.Errorf("%w: attaching to sys_exit: %v", ErrNoSysGate, err)
	}
	g.Detach()
	if g.prog != nil {
		g.prog.Close()
	}
	g.prog, g.link = prog, l
	return nil
}

// sysProgram is the sys_exit program of g for rules:
//
//	if the process (in memtrap's PID namespace) is not g's: return
//	read the call's registers (pt_regs r10..orig_ax)
//	each rule: if its number and (no arguments, or an argument in a
//	           range): stop
//	return
//	stop: pending[tid] = number; send SIGSTOP to the thread
//	      (if that fails: forget it, state[0]++)
func sysProgram(g *SysGate, rules []tracer.FilterRule) (asm.Instructions, error) {
	// The number first: the program runs at every call of every process,
	// and most calls are of a number no rule has.
	in := asm.Instructions{
		asm.Mov.Reg(asm.R6, asm.R1),
		// The tracepoint's first argument is the thread's pt_regs.
		asm.LoadMem(asm.R9, asm.R6, 0, asm.DWord),
		asm.LoadMem(asm.R7, asm.R9, 120, asm.DWord), // orig_ax
	}
	in = append(in, numberTest(rules)...)
	ours := inProcessFrom(g.ns, g.tgid, sgTid)
	ours[0] = ours[0].WithSymbol("rules")
	in = append(in, ours...)
	in = append(in,
		asm.LoadMapPtr(asm.R1, g.quiet.FD()),
		asm.Mov.Reg(asm.R2, asm.R10),
		asm.Add.Imm(asm.R2, sgTid),
		asm.FnMapLookupElem.Call(),
		asm.JNE.Imm(asm.R0, 0, "out"),
	)
	for i, r := range rules {
		next := fmt.Sprintf("rule%d", i+1)
		in = append(in, asm.JNE.Imm(asm.R7, int32(r.Nr), next))
		if len(r.Args) == 0 {
			in = append(in, asm.Ja.Label("stop"))
		}
		for _, a := range r.Args {
			if a < 0 || a >= len(sgArg) {
				return nil, fmt.Errorf("system call argument %d", a)
			}
			in = append(in, asm.LoadMem(asm.R8, asm.R9, sgArg[a], asm.DWord))
			for j, rg := range r.Ranges {
				skip := fmt.Sprintf("rule%d.arg%d.range%d", i, a, j)
				in = append(in,
					asm.LoadImm(asm.R1, int64(rg.Lo), asm.DWord),
					asm.JLT.Reg(asm.R8, asm.R1, skip),
					asm.LoadImm(asm.R1, int64(rg.Hi), asm.DWord),
					asm.JLT.Reg(asm.R8, asm.R1, "stop"),
					asm.Mov.Imm(asm.R0, 0).WithSymbol(skip),
				)
			}
		}
		in = append(in, asm.Mov.Imm(asm.R0, 0).WithSymbol(next))
	}
	in = append(in,
		asm.Mov.Imm(asm.R0, 0).WithSymbol("out"),
		asm.Return(),
		asm.StoreMem(asm.R10, sgNr, asm.R7, asm.DWord).WithSymbol("stop"),
	)
	in = append(in, stopThread(g.pending, sgTid, sgNr, g.state, sgNr, 0, 0, "")...)
	return in, nil
}

// numberTest returns from the program when the call's number (r7) is none
// of the rules': a bitmap of the numbers below 512, tested in a dozen
// instructions, so that the calls that matter to no rule (most) skip the
// rules. With a rule for a number past it, every call tries the rules.
func numberTest(rules []tracer.FilterRule) asm.Instructions {
	var bits [8]uint64
	for _, r := range rules {
		if r.Nr < 0 || r.Nr >= 64*len(bits) {
			return nil
		}
		bits[r.Nr/64] |= 1 << (r.Nr % 64)
	}
	in := asm.Instructions{
		asm.JGT.Imm(asm.R7, int32(64*len(bits)-1), "out"),
		asm.Mov.Reg(asm.R2, asm.R7),
		asm.RSh.Imm(asm.R2, 6),
		asm.Mov.Reg(asm.R4, asm.R7),
		asm.And.Imm(asm.R4, 63),
		asm.Mov.Imm(asm.R3, 1),
		asm.LSh.Reg(asm.R3, asm.R4),
	}
	for i, b := range bits {
		if b == 0 {
			continue
		}
		skip := fmt.Sprintf("word%d", i)
		in = append(in,
			asm.JNE.Imm(asm.R2, int32(i), skip),
			asm.LoadImm(asm.R1, int64(b), asm.DWord),
			asm.And.Reg(asm.R1, asm.R3),
			asm.JNE.Imm(asm.R1, 0, "rules"),
			asm.Ja.Label("out"),
			asm.Mov.Imm(asm.R0, 0).WithSymbol(skip),
		)
	}
	return append(in, asm.Ja.Label("out"))
}

// Owns says whether st is the stop of a call of the gate's (a SIGSTOP
// with a pending record for its thread), and gives the call's number.
func (g *SysGate) Owns(st tracer.Stop) (int, bool) {
	if st.Kind != tracer.StopSignal || st.Sig != int(unix.SIGSTOP) || st.Thread == nil {
		return 0, false
	}
	var nr uint64
	if g.pending.Lookup(uint32(st.Thread.Tid), &nr) != nil {
		return 0, false
	}
	return int(nr), true
}

// Quiet makes the calls of thread tid go by unstopped, or stop again: for
// the calls a tracer injects, whose SIGSTOP would otherwise come during
// its injection and be taken for the target's.
func (g *SysGate) Quiet(tid int, on bool) error {
	var err error
	if on {
		err = g.quiet.Put(uint32(tid), uint8(1))
	} else if err = g.quiet.Delete(uint32(tid)); errors.Is(err, ebpf.ErrKeyNotExist) {
		err = nil
	}
	if err != nil {
		return fmt.Errorf("the system call gate's quiet threads: %w", err)
	}
	return nil
}

// Done forgets the pending call of thread tid.
func (g *SysGate) Done(tid int) error {
	if err := g.pending.Delete(uint32(tid)); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
		return fmt.Errorf("the system call gate's stopped calls: %w", err)
	}
	return nil
}

// Pending lists the threads whose SIGSTOP the gate sent and the tracer
// has not handled.
func (g *SysGate) Pending() []int {
	var tids []int
	var k uint32
	var v uint64
	it := g.pending.Iterate()
	for it.Next(&k, &v) {
		tids = append(tids, int(k))
	}
	return tids
}

// Missed counts the calls whose SIGSTOP could not be sent.
func (g *SysGate) Missed() uint64 { return word(g.state, 0) }

// Detach takes the program off sys_exit: no new stops come. Pending keeps
// the stops on their way.
func (g *SysGate) Detach() error {
	if g.link == nil {
		return nil
	}
	err := g.link.Close()
	g.link = nil
	return err
}

// Close detaches the gate and frees its program and maps.
func (g *SysGate) Close() error {
	err := g.Detach()
	if g.prog != nil {
		g.prog.Close()
		g.prog = nil
	}
	for _, m := range []*ebpf.Map{g.pending, g.state, g.quiet} {
		if m != nil {
			m.Close()
		}
	}
	g.pending, g.state, g.quiet = nil, nil, nil
	return err
}

// TakeSignals takes the SIGSTOPs a gate sent that are still on their way
// to the threads tids of p (stopped, the others too; a thread gone is
// skipped): each thread is stepped into its signal-delivery-stop, and the
// signal dropped (one someone else sent is kept: Defer), after at (when
// not nil) ran there. The signals that come first are kept for later.
func TakeSignals(p *tracer.Process, tids []int, at func(*tracer.Thread) error) error {
	for _, tid := range tids {
		t := p.Thread(tid)
		if t == nil || !t.Stopped() {
			continue
		}
		for range 64 { // its own signals come first, each kept for later
			res, err := t.Step()
			if err != nil {
				return err
			}
			if res.Done {
				break
			}
			if res.Sig == int(unix.SIGSTOP) {
				if at != nil {
					if err := at(t); err != nil {
						return err
					}
				}
				if Foreign(tracer.Stop{Info: res.Info}) {
					t.Defer(res.Info)
				}
				break
			}
			t.Defer(res.Info)
		}
	}
	return nil
}
