package main

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"strings"

	"github.com/memtrap/memtrap/internal/report"
	"github.com/spf13/cobra"
)

func newReportCmd(s *Streams) *cobra.Command {
	var folded bool
	cmd := &cobra.Command{
		Use:   "report [--folded] FILE",
		Short: "Summarize a saved JSON Lines report: who wrote, how often",
		Long: `Read a report memtrap wrote with --format json (FILE, or - for standard input)
and print the writers table --summary prints: each writing instruction with its
function, file:line, count, share and threads, most writes first.

With --folded, print the writes' backtraces as folded stacks instead, one line
per stack, outermost frame first, with its count: the input of flame graph
tools (inferno-flamegraph, flamegraph.pl, speedscope).`,
		Example: `  memtrap run --format json -o log.json --symbol config -- ./prog
  memtrap report log.json
  memtrap report --folded log.json | inferno-flamegraph > writes.svg`,
		Args: func(_ *cobra.Command, args []string) error {
			if len(args) != 1 {
				return usagef("report: want one FILE (a --format json report, or - for standard input), got %d arguments", len(args))
			}
			return nil
		},
		RunE: func(_ *cobra.Command, args []string) error {
			var in io.Reader = s.In
			name := args[0]
			if name != "-" {
				f, err := os.Open(name)
				if err != nil {
					var pe *fs.PathError
					if errors.As(err, &pe) {
						err = pe.Err
					}
					return fmt.Errorf("report: %s: %v", name, err)
				}
				defer f.Close()
				in = f
			} else {
				name = "standard input"
			}
			lg, err := report.ReadLog(in, name)
			if err != nil {
				return fmt.Errorf("report: %v", err)
			}
			if folded {
				for _, l := range lg.Folded {
					fmt.Fprintln(s.Out, l)
				}
				return nil
			}
			total := 0
			for _, w := range lg.Writers {
				total += w.Count
			}
			var b strings.Builder
			fmt.Fprintf(&b, "%d write%s from %d instruction%s:\n", total, plural(total), len(lg.Writers), plural(len(lg.Writers)))
			report.WriteTable(&b, lg.Writers)
			_, err = io.WriteString(s.Out, b.String())
			return err
		},
	}
	cmd.Flags().BoolVar(&folded, "folded", false, "print folded stacks for flame graph tools instead of the table")
	return cmd
}

func plural(n int) string {
	if n == 1 {
		return ""
	}
	return "s"
}
