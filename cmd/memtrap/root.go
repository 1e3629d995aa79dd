package main

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"strconv"
	"strings"

	"github.com/memtrap/memtrap/internal/session"
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
)

// Streams are the CLI's standard streams, injected so tests can capture them.
type Streams struct {
	In       io.Reader
	Out, Err io.Writer
}

// Exit codes for memtrap's own failures; a target's exit code passes
// through unchanged in run mode.
const (
	exitRuntime = 1
	exitUsage   = 2
)

// UsageError is bad input on the command line: exit 2.
type UsageError struct{ Err error }

func (e *UsageError) Error() string { return e.Err.Error() }
func (e *UsageError) Unwrap() error { return e.Err }

func usagef(format string, a ...any) error {
	return &UsageError{fmt.Errorf(format, a...)}
}

// ExitError carries an exit code decided by a command (the target's).
type ExitError struct{ Code int }

func (e *ExitError) Error() string { return fmt.Sprintf("exit %d", e.Code) }

// Main runs memtrap with args and returns the process exit code.
func Main(args []string, in io.Reader, out, errw io.Writer) int {
	s := &Streams{In: in, Out: out, Err: errw}
	return execute(newRootCmd(s, newRunCmd(s, nil), newAttachCmd(s, nil), newVersionCmd(s), newReportCmd(s), newManCmd(s)), args, errw)
}

// execute runs root with args, and turns what went wrong into one line on
// errw and an exit code.
func execute(root *cobra.Command, args []string, errw io.Writer) int {
	root.SetArgs(args)
	err := root.Execute()
	if err == nil {
		return 0
	}
	var ee *ExitError
	if errors.As(err, &ee) {
		return ee.Code
	}
	msg := strings.TrimSpace(err.Error())
	if i := strings.IndexByte(msg, '\n'); i >= 0 {
		msg = msg[:i]
	}
	fmt.Fprintf(errw, "memtrap: %s\n", msg)
	var ue *UsageError
	if errors.As(err, &ue) || isCobraUsage(err) || errors.Is(err, session.ErrUsage) {
		return exitUsage
	}
	return exitRuntime
}

// isCobraUsage recognises cobra's and pflag's own parse errors.
func isCobraUsage(err error) bool {
	m := err.Error()
	for _, p := range []string{"unknown command", "unknown flag", "unknown shorthand", "flag needs an argument", "invalid argument", "accepts ", "requires at least", "bad flag syntax", "required flag"} {
		if strings.Contains(m, p) {
			return true
		}
	}
	return false
}

// newRootCmd makes the root over verbs: tests hand it verbs whose runF
// only records what they were asked.
func newRootCmd(s *Streams, verbs ...*cobra.Command) *cobra.Command {
	root := &cobra.Command{
		Use:   "memtrap",
		Short: "Report who writes to a region of a process's memory, when, and with what value",
		Long: `memtrap watches memory regions of a Linux x86-64 process from outside, with ptrace:
it write-protects the pages that hold them, catches every write, lets it complete,
and reports the writer (thread, instruction, old -> new value, backtrace).`,
		SilenceUsage:  true,
		SilenceErrors: true,
		Version:       version,
	}
	root.SetVersionTemplate("memtrap {{.Version}}\n")
	root.SetOut(s.Out)
	root.SetErr(s.Err)
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return &UsageError{numberFlagError(err)} })
	root.AddCommand(verbs...)
	// memtrap completion bash|zsh|fish|powershell: cobra's own.
	root.CompletionOptions.HiddenDefaultCmd = false
	return root
}

// numberFlagError says in memtrap's words what a number (or boolean) flag's value lacks,
// where pflag would pass on strconv's ("strconv.ParseInt: parsing "x":
// invalid syntax").
func numberFlagError(err error) error {
	var bad *pflag.InvalidValueError
	var num *strconv.NumError
	if !errors.As(err, &bad) || !errors.As(err, &num) {
		return err
	}
	why := "not a whole number"
	switch typ := bad.GetFlag().Value.Type(); {
	case typ == "bool":
		why = "want true or false"
	case errors.Is(num.Err, strconv.ErrRange):
		why = "number too large"
	case strings.HasPrefix(typ, "uint"):
		why = "not a whole number (0 or more)"
	}
	return fmt.Errorf("--%s %s: %s", bad.GetFlag().Name, bad.GetValue(), why)
}

// watchOn runs a session with its report on -o FILE (path), by default
// on the error stream, so that the target keeps its stdout.
func watchOn(s *Streams, path string, w session.Options, run func(session.Options) error) error {
	out, closeOut, err := openOutput(path, s.Err)
	if err != nil {
		return err
	}
	defer closeOut()
	w.Out = out
	return run(w)
}

// openOutput opens -o FILE, or returns the default stream.
func openOutput(path string, def io.Writer) (io.Writer, func() error, error) {
	if path == "" || path == "-" {
		return def, func() error { return nil }, nil
	}
	f, err := os.Create(path)
	if err != nil {
		var pe *fs.PathError
		if errors.As(err, &pe) {
			err = pe.Err
		}
		// Before any target starts: it must not run unwatched.
		return nil, nil, fmt.Errorf("-o %s: cannot write it: %v", path, err)
	}
	return f, f.Close, nil
}
