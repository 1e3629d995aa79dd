package main

import (
	"fmt"
	"strconv"

	"github.com/memtrap/memtrap/internal/report"
	"github.com/memtrap/memtrap/pkg/pagewatch"
	"github.com/memtrap/memtrap/pkg/tracer"
	"github.com/spf13/cobra"
)

type attachOptions struct {
	watchFlags
	pid int
}

func newAttachCmd(s *Streams) *cobra.Command {
	o := &attachOptions{}
	cmd := &cobra.Command{
		Use:   "attach PID [flags]",
		Short: "Watch a running process; Ctrl-C detaches and leaves it running",
		Example: `  memtrap attach 1234 --addr 0x7f12a4c01000 --len 64
  memtrap attach 1234 --symbol config --when-value 0`,
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) != 1 {
				return usagef("attach: want exactly one PID, got %d arguments", len(args))
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			pid, err := strconv.Atoi(args[0])
			if err != nil || pid <= 0 {
				return usagef("attach: %q is not a process id", args[0])
			}
			o.pid = pid
			if err := o.validate(cmd); err != nil {
				return err
			}
			return runAttach(o, s)
		},
	}
	o.register(cmd.Flags())
	return cmd
}

func runAttach(o *attachOptions, s *Streams) error {
	se, wopts, done, err := start(&o.watchFlags, s)
	if err != nil {
		return err
	}
	defer done()
	var sum report.Summary
	err = tracer.Locked(func() error {
		p, err := tracer.Attach(o.pid)
		if err != nil {
			return err
		}
		se.setProcess(p)
		defer se.close()
		sum, err = se.attachWatch(wopts)
		return err
	})
	if err != nil {
		return err
	}
	return se.rep.End(sum)
}

func (se *session) attachWatch(wopts pagewatch.Options) (report.Summary, error) {
	p := se.p
	threads := p.Threads()
	if len(threads) == 0 {
		return report.Summary{}, fmt.Errorf("process %d has no threads left", p.Pid)
	}
	t := threads[0]
	letGo := func(w *pagewatch.Watch) {
		if w != nil {
			_ = w.Disarm(t)
		}
		_ = p.Detach()
	}
	regions, err := se.resolve()
	if err != nil {
		letGo(nil)
		return report.Summary{}, err
	}
	w, err := pagewatch.New(p, regions, wopts)
	if err != nil {
		letGo(nil)
		return report.Summary{}, err
	}
	se.w = w
	if err := w.Arm(t); err != nil {
		letGo(w)
		return report.Summary{}, err
	}
	if err := se.watchPending(w); err != nil {
		letGo(w)
		return report.Summary{}, err
	}
	if err := se.rep.Start(p.Pid, w.Engine(), reportRegions(regions)); err != nil {
		letGo(w)
		return report.Summary{}, err
	}
	go func() {
		for range se.sigs {
			w.RequestDetach()
		}
	}()
	if err := p.ResumeAll(); err != nil {
		return report.Summary{}, err
	}
	st, err := w.Run()
	if err != nil {
		return report.Summary{}, err
	}
	return summary(w, st), nil
}
