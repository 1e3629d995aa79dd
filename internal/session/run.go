package session

import (
	"debug/elf"
	"errors"
	"fmt"
	"os/exec"
	"strings"

	"github.com/memtrap/memtrap/internal/report"
	"github.com/memtrap/memtrap/pkg/fastwatch"
	"github.com/memtrap/memtrap/pkg/guard"
	"github.com/memtrap/memtrap/pkg/pagewatch"
	"github.com/memtrap/memtrap/pkg/tracer"
	"golang.org/x/sys/unix"
)

// Run launches argv, watches it from its entry point to its end and
// returns the exit code a shell would report for it (128+N if signal N
// killed it). SIGTERM and SIGHUP sent to memtrap meanwhile go to the
// target.
func Run(opts Options, argv []string) (code int, err error) {
	if err := checkMachine(argv[0]); err != nil {
		return 0, err
	}
	se := newSession(opts)
	wopts := se.watchOptions()
	// A launched target keeps memtrap until it ends: a seccomp filter
	// can stop only the syscalls that matter. Unless memtrap is to let it
	// go before it ends: the filter cannot be taken out, and its stops
	// need a tracer that asked for them.
	wopts.SyscallFilter = !se.handsOff()
	end := se.begin()
	defer end()
	var sum report.Summary
	err = tracer.Locked(func() error {
		p, err := tracer.Launch(argv, tracer.LaunchOptions{})
		if err != nil {
			return err
		}
		se.setProcess(p)
		defer se.close()
		go forwardSignals(se, p.Pid)
		st, err := se.runWatch(wopts)
		if err != nil {
			p.Kill()
			return err
		}
		sum = st
		se.prepareEnd(sum)
		return nil
	})
	if err != nil {
		return 0, err
	}
	se.notePending()
	if err := se.finishReport(sum); err != nil {
		return 0, err
	}
	return exitCode(sum), nil
}

// runWatch takes a launched target to its entry point, arms and runs it.
func (se *session) runWatch(wopts pagewatch.Options) (report.Summary, error) {
	p := se.p
	t, err := p.RunToEntry()
	if errors.Is(err, tracer.ErrProcessExited) {
		_, ws := p.Exited()
		return summary(nil, tracer.Stop{Kind: tracer.StopExited, Status: ws}), nil
	}
	if err != nil {
		return report.Summary{}, fmt.Errorf("starting the target: %w", err)
	}
	regions, err := se.resolve()
	if err == nil {
		err = se.checkWhen(regions)
	}
	if err != nil {
		return report.Summary{}, err
	}
	if se.opts.Engine == fastwatch.Engine || se.autoFast(regions) {
		sum, err := se.runFast(t, regions)
		if se.opts.Engine == fastwatch.Engine || !errors.Is(err, fastwatch.ErrTooMany) && !errors.Is(err, fastwatch.ErrNoASLR) {
			return sum, err
		}
		// More pages than the agent arms, or an address space laid
		// out the same every time (found before it is installed):
		// auto takes the page engine.
	}
	if len(se.pending) > 0 {
		// A library loaded later can land anywhere: the listener's
		// filter covers all of user space, so that no later filter
		// (whose children would need a tracer) is needed for it.
		wopts.Anywhere = true
	}
	w, err := pagewatch.New(p, regions, wopts)
	if err != nil {
		return report.Summary{}, err
	}
	se.w = w
	if err := se.codePage(w, t); err != nil {
		return report.Summary{}, err
	}
	if err := w.Arm(t); err != nil {
		return report.Summary{}, err
	}
	if err := se.watchPending(w); err != nil {
		return report.Summary{}, err
	}
	hookLines, err := se.hook(w, t)
	if err != nil {
		return report.Summary{}, err
	}
	if err := se.rep.Start(p.Pid, w.Engine(), reportRegions(regions)); err != nil {
		return report.Summary{}, err
	}
	for _, l := range hookLines {
		_ = se.rep.Note(fmt.Sprintf("%s, in process %d (engine %s)", l, p.Pid, w.Engine()))
	}
	if fd, ok := p.Listener(); ok {
		// The syscall filter's calls in processes memtrap does not
		// trace must still be answered once memtrap is gone.
		if err := guard.StartKeeper(fd, p.ListenerLedger()); err != nil {
			_ = se.rep.Note(fmt.Sprintf("%v: children of the target left running when memtrap ends will see ENOSYS from some system calls", err))
		}
	}
	if err := p.ResumeAll(); err != nil {
		return report.Summary{}, err
	}
	st, err := w.Run()
	if err != nil {
		return report.Summary{}, err
	}
	if p.Kept() > 0 {
		// Children not followed that the target left running (a
		// daemon, orphans) were traced only because their inherited
		// syscall filter needs a tracer: the run ends with the target,
		// as it does natively, and they go on untraced. (After a
		// hand-off too: memtrap serves them no more while it waits.)
		n, err := p.ReleaseKept()
		if err != nil {
			return report.Summary{}, err
		}
		if n > 0 && !w.HandedOff() {
			_ = se.rep.Note(fmt.Sprintf("the target exited leaving %d task(s) of child processes running; they go on untraced, and their system calls that memtrap's syscall filter stops now fail with ENOSYS (see README, Limits)", n))
		}
	}
	if w.HandedOff() {
		return se.afterHandOff(summary(w, st))
	}
	return summary(w, st), nil
}

// forwardSignals passes SIGTERM and SIGHUP to the target, as a shell's job
// would get them. SIGINT and SIGQUIT from the terminal already reach the
// target, which shares memtrap's foreground process group; sent to memtrap
// alone, they are forwarded too.
func forwardSignals(se *session, pid int) {
	for sig := range se.sigs {
		s := sig.(unix.Signal)
		if (s == unix.SIGINT || s == unix.SIGQUIT) && fromTerminal() {
			continue
		}
		_ = unix.Kill(pid, s)
	}
}

// fromTerminal reports whether memtrap runs in its terminal's foreground
// process group, so a Ctrl-C also went to the target.
func fromTerminal() bool {
	pgrp, err := unix.IoctlGetInt(0, unix.TIOCGPGRP)
	return err == nil && pgrp == unix.Getpgrp()
}

// checkMachine refuses, before it starts, a program memtrap cannot watch:
// an ELF file for another machine or word size. A script (its
// interpreter decides) or a file memtrap cannot read passes; launching
// says what is wrong with it.
func checkMachine(prog string) error {
	path := prog
	if !strings.Contains(prog, "/") {
		var err error
		if path, err = exec.LookPath(prog); err != nil {
			return nil
		}
	}
	f, err := elf.Open(path)
	if err != nil {
		return nil
	}
	defer f.Close()
	if f.Class == elf.ELFCLASS64 && f.Machine == elf.EM_X86_64 {
		return nil
	}
	what := fmt.Sprintf("%s for %s", map[elf.Class]string{elf.ELFCLASS32: "32-bit", elf.ELFCLASS64: "64-bit"}[f.Class], machineName(f.Machine))
	if f.Machine == elf.EM_386 || (f.Machine == elf.EM_X86_64 && f.Class == elf.ELFCLASS32) {
		what = "32-bit x86"
		if f.Machine == elf.EM_X86_64 {
			what = "x32 (32-bit pointers on x86-64)"
		}
	}
	return fmt.Errorf("memtrap watches x86-64 programs; %s is %s", prog, what)
}

func machineName(m elf.Machine) string {
	return strings.ToLower(strings.TrimPrefix(m.String(), "EM_"))
}

// notePending says, at the end, which pending symbols never resolved.
func (se *session) notePending() {
	for _, s := range se.pending {
		_ = se.rep.Note(fmt.Sprintf("symbol %s never resolved: no library loaded defined it, nothing was watched for it", s.Symbol))
	}
}

// autoFast says whether auto takes the fast engine for regions: in a
// launched target, where the debug registers cannot take them (they cost
// the target nothing for a neighbour's stores, which the fast engine's
// agent completes at about 5 us each), and nothing asked for that the fast
// engine does not do (README, "The fast engine").
func (se *session) autoFast(regions []*pagewatch.Region) bool {
	o := se.opts
	return o.Engine == pagewatch.EngineAuto && !se.attached && !o.Pending && len(se.pending) == 0 &&
		len(o.Heap)+len(o.Args)+len(o.Locals) == 0 && !o.FollowForks && o.OnHit == "" && o.Completer != "step" &&
		!pagewatch.HWPicked(regions)
}

// handsOff reports whether the session may let the target go before it
// ends (--on-hit stop, --max-writes).
func (se *session) handsOff() bool { return se.opts.OnHit != "" || se.opts.MaxWrites > 0 }

// afterHandOff says what became of a launched target memtrap let go, and
// waits for its end: it is memtrap's child, which must outlive it (a
// stopped process whose parent exits gets SIGHUP then SIGCONT from the
// kernel, as an orphaned stopped job does, and would die of it).
func (se *session) afterHandOff(sum report.Summary) (report.Summary, error) {
	pid := se.p.Pid
	if se.opts.OnHit == "stop" {
		_ = se.rep.Note(se.stoppedLine() + "; memtrap waits for it to end")
	} else {
		_ = se.rep.Note(fmt.Sprintf("%d write%s reported (--max-writes): not watching any more; process %d runs on untraced", se.kept, plural(se.kept), pid))
	}
	_ = se.rep.Flush()
	var ws unix.WaitStatus
	for {
		_, err := unix.Wait4(pid, &ws, 0, nil)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return sum, fmt.Errorf("waiting for process %d: %w", pid, err)
		}
		break
	}
	sum.Detached = false
	if ws.Signaled() {
		sum.Signaled, sum.Signal = true, int(ws.Signal())
	} else {
		sum.Code = ws.ExitStatus()
	}
	return sum, nil
}

// stoppedLine tells where --on-hit stop left the target, and how to go on.
func (se *session) stoppedLine() string {
	wr := se.hit
	by := fmt.Sprintf("%#x", wr.PC)
	if loc, ok := se.image(wr.Pid).syms.Lookup(wr.PC); ok && loc.Func != "" {
		by = loc.Func
		if loc.File != "" {
			by += fmt.Sprintf(" (%s:%d)", loc.File, loc.Line)
		}
	}
	if wr.Syscall != "" {
		by = wr.Syscall + "(2) in " + by
	}
	// gdb's attach queues a SIGSTOP of its own, which the first continue
	// would report (and pass on, stopping it again): the handle skips it.
	return fmt.Sprintf("process %d stopped after write #%d by %s; continue with: gdb -p %d -ex 'handle SIGSTOP nostop noprint nopass'", wr.Pid, wr.Seq, by, wr.Pid)
}
