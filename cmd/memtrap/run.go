package main

import (
	"errors"
	"fmt"

	"github.com/memtrap/memtrap/internal/report"
	"github.com/memtrap/memtrap/pkg/pagewatch"
	"github.com/memtrap/memtrap/pkg/tracer"
	"github.com/spf13/cobra"
	"golang.org/x/sys/unix"
)

type runOptions struct {
	watchFlags
	argv []string
}

func newRunCmd(s *Streams) *cobra.Command {
	o := &runOptions{}
	cmd := &cobra.Command{
		Use:   "run [flags] -- PROGRAM [ARGS...]",
		Short: "Launch a program and watch its memory from its first instruction",
		Example: `  memtrap run --symbol counter -- ./prog
  memtrap run --addr 0x404040 --len 64 --format json -o writes.jsonl -- ./prog arg`,
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) == 0 {
				return usagef("run: no program given (memtrap run [flags] -- PROGRAM [ARGS...])")
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			o.argv = args
			if err := o.validate(cmd); err != nil {
				return err
			}
			return runRun(o, s)
		},
	}
	cmd.Flags().SetInterspersed(false)
	o.register(cmd.Flags())
	return cmd
}

func runRun(o *runOptions, s *Streams) error {
	se, wopts, done, err := start(&o.watchFlags, s)
	if err != nil {
		return err
	}
	// A launched target keeps memtrap until it ends: a seccomp filter
	// can stop only the syscalls that matter.
	wopts.SyscallFilter = true
	defer done()
	var sum report.Summary
	err = tracer.Locked(func() error {
		p, err := tracer.Launch(o.argv, tracer.LaunchOptions{})
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
		return nil
	})
	if err != nil {
		return err
	}
	if err := se.rep.End(sum); err != nil {
		return err
	}
	return &ExitError{Code: exitCode(sum)}
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
	if err != nil {
		return report.Summary{}, err
	}
	w, err := pagewatch.New(p, regions, wopts)
	if err != nil {
		return report.Summary{}, err
	}
	se.w = w
	if err := w.Arm(t); err != nil {
		return report.Summary{}, err
	}
	if err := se.watchPending(w); err != nil {
		return report.Summary{}, err
	}
	if err := se.rep.Start(p.Pid, w.Engine(), reportRegions(regions)); err != nil {
		return report.Summary{}, err
	}
	if err := p.ResumeAll(); err != nil {
		return report.Summary{}, err
	}
	st, err := w.Run()
	if err != nil {
		return report.Summary{}, err
	}
	if n := p.Kept(); n > 0 {
		// They inherited the syscall filter, which needs its tracer.
		_ = se.rep.Note(fmt.Sprintf("the target exited; waiting for the %d task(s) of child processes it left running", n))
		if err := p.WaitKept(); err != nil {
			return report.Summary{}, err
		}
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
