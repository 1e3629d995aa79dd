package main

import (
	"strconv"

	"github.com/memtrap/memtrap/internal/session"
	"github.com/spf13/cobra"
)

// AttachOptions are what `memtrap attach` was asked.
type AttachOptions struct {
	IO     *Streams
	Watch  session.Options // its Out is the -o stream, opened by runAttach
	Output string          // -o FILE; "" or "-": stderr
	Pid    int
}

// newAttachCmd wires attach's flags; runF, if set, gets the validated
// options instead of runAttach, so tests can check flag handling without
// a target.
func newAttachCmd(s *Streams, runF func(*AttachOptions) error) *cobra.Command {
	opts := &AttachOptions{IO: s}
	var f watchFlags
	cmd := &cobra.Command{
		Use:   "attach PID [flags]",
		Short: "Watch a running process; Ctrl-C detaches and leaves it running",
		Example: `  memtrap attach 1234 --addr 0x7f12a4c01000 --len 64
  memtrap attach 1234 --symbol config --when-value 0
  memtrap attach 1234 --symbol config --when 'changed && at(apply_*)' --on-hit stop   # then: gdb -p 1234
  memtrap attach 1234 --heap size=40 --summary
  memtrap attach 1234 --symbol stats --max-writes 100 --format json -o stats.jsonl`,
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
			if w.Engine == "fast" {
				return usagef("attach: --engine fast is for memtrap run only (the agent and its syscall filter cannot be taken out of a process again)")
			}
			opts.Watch, opts.Output, opts.Pid = w, f.output, pid
			if runF != nil {
				return runF(opts)
			}
			return runAttach(opts)
		},
	}
	f.register(cmd.Flags())
	return cmd
}

// runAttach ends with memtrap's own status: 0 once the watch is over, by a
// detach or by the target's exit; the target's code is not memtrap's.
func runAttach(opts *AttachOptions) error {
	code := 0
	err := watchOn(opts.IO, opts.Output, opts.Watch, func(w session.Options) (err error) {
		code, err = session.Attach(w, opts.Pid)
		return err
	})
	if err != nil {
		return err
	}
	if code != 0 {
		// The target died while watched: its status, as run reports it.
		return &ExitError{Code: code}
	}
	return nil
}
