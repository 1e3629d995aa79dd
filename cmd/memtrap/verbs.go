package main

import (
	"strconv"

	"github.com/memtrap/memtrap/internal/session"
	"github.com/spf13/cobra"
)

// RunOptions are what `memtrap run` was asked.
type RunOptions struct {
	IO     *Streams
	Watch  session.Options // its Out is the -o stream, opened by runRun
	Output string          // -o FILE; "" or "-": stderr
	Argv   []string
}

func newRunCmd(s *Streams) *cobra.Command {
	opts := &RunOptions{IO: s}
	var f watchFlags
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
			w, err := f.options()
			if err != nil {
				return err
			}
			opts.Watch, opts.Output, opts.Argv = w, f.output, args
			return runRun(opts)
		},
	}
	cmd.Flags().SetInterspersed(false)
	f.register(cmd.Flags())
	return cmd
}

func runRun(opts *RunOptions) error {
	out, closeOut, err := openOutput(opts.Output, opts.IO.Err)
	if err != nil {
		return err
	}
	defer closeOut()
	w := opts.Watch
	w.Out = out
	code, err := session.Run(w, opts.Argv)
	if err != nil {
		return err
	}
	return &ExitError{Code: code}
}

// AttachOptions are what `memtrap attach` was asked.
type AttachOptions struct {
	IO     *Streams
	Watch  session.Options // its Out is the -o stream, opened by runAttach
	Output string          // -o FILE; "" or "-": stderr
	Pid    int
}

func newAttachCmd(s *Streams) *cobra.Command {
	opts := &AttachOptions{IO: s}
	var f watchFlags
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
			w, err := f.options()
			if err != nil {
				return err
			}
			opts.Watch, opts.Output, opts.Pid = w, f.output, pid
			return runAttach(opts)
		},
	}
	f.register(cmd.Flags())
	return cmd
}

func runAttach(opts *AttachOptions) error {
	out, closeOut, err := openOutput(opts.Output, opts.IO.Err)
	if err != nil {
		return err
	}
	defer closeOut()
	w := opts.Watch
	w.Out = out
	return session.Attach(w, opts.Pid)
}
