package main

import (
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

// newRunCmd wires run's flags; runF, if set, gets the validated options
// instead of runRun, so tests can check flag handling without a target.
func newRunCmd(s *Streams, runF func(*RunOptions) error) *cobra.Command {
	opts := &RunOptions{IO: s}
	var f watchFlags
	cmd := &cobra.Command{
		Use:   "run [flags] -- PROGRAM [ARGS...]",
		Short: "Launch a program and watch its memory from its first instruction",
		Example: `  memtrap run --symbol counter -- ./prog
  memtrap run --addr 0x404040 --len 64 --format json -o writes.jsonl -- ./prog arg
  memtrap run --symbol cfg.limits.max --when 'new > 100 && !in(reload_*)' -- ./server
  memtrap run --symbol session --when 'new == 0' --on-hit stop -- ./prog   # then: gdb -p PID
  memtrap run --symbol refcount --summary --backtrace 0 -- ./prog           # who writes most
  memtrap run --heap size=40 --last 5 -- ./prog                             # the writes before the crash
  memtrap run --symbol table --max-writes 10 -- ./prog                      # then run on untraced
  memtrap run --heap size=32-64,site=parse_header --freed --redzone 8 -- ./prog`,
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
			if runF != nil {
				return runF(opts)
			}
			return runRun(opts)
		},
	}
	// Everything after the program's name is the program's.
	cmd.Flags().SetInterspersed(false)
	f.register(cmd.Flags())
	return cmd
}

// runRun exits with the target's exit code.
func runRun(opts *RunOptions) error {
	var code int
	err := watchOn(opts.IO, opts.Output, opts.Watch, func(w session.Options) (err error) {
		code, err = session.Run(w, opts.Argv)
		return err
	})
	if err != nil {
		return err
	}
	return &ExitError{Code: code}
}
