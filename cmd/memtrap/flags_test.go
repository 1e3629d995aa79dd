package main

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/memtrap/memtrap/internal/cond"
	"github.com/memtrap/memtrap/internal/session"
)

// verbRun is what one in-process command line did: the options its verb
// was handed (a *RunOptions or *AttachOptions; nil if no verb ran), the
// exit code and the streams.
type verbRun struct {
	got            any
	code           int
	stdout, stderr string
	io             *Streams
}

// parse runs memtrap's root over args with verbs whose runF records what
// they were asked, so that flag handling is checked without a target.
func parse(args ...string) verbRun {
	var out, errw bytes.Buffer
	s := &Streams{Out: &out, Err: &errw}
	var v verbRun
	root := newRootCmd(s,
		newRunCmd(s, func(o *RunOptions) error { v.got = o; return nil }),
		newAttachCmd(s, func(o *AttachOptions) error { v.got = o; return nil }),
		newVersionCmd(s), newReportCmd(s), newManCmd(s))
	v.code = execute(root, args, &errw)
	v.stdout, v.stderr, v.io = out.String(), errw.String(), s
	return v
}

// defaults are the options of a bare run or attach over specs.
func defaults(specs ...session.Spec) session.Options {
	return session.Options{Specs: specs, Width: 8, Backtrace: 8, Engine: "auto", Completer: "emulate",
		KernelWrites: true, Format: "text", Color: "auto"}
}

func u64(v uint64) *uint64 { return &v }

// Good command lines: the exact options each verb is handed.
func TestVerbOptions(t *testing.T) {
	every := defaults(session.Spec{Symbol: "refcount"})
	every.WhenValue, every.Width, every.Backtrace, every.Format = u64(0), 4, 0, "json"
	every.Engine, every.FollowForks, every.Pending, every.KernelWrites, every.Completer = "hw", true, true, false, "step"
	hexValue := defaults(session.Spec{Addr: 0x7ffffffff000, Len: 0x1000})
	hexValue.WhenValue = u64(0x5ec0de)
	whenZero := defaults(session.Spec{Symbol: "config"})
	whenZero.WhenValue = u64(0)
	pending := defaults(session.Spec{Symbol: "libc.so.6:environ"})
	pending.Pending = true
	heap := defaults()
	heap.Heap = []session.HeapSpec{{MinSize: 40, MaxSize: 40}, {MinSize: 32, MaxSize: 64, Site: "Session::create", Nth: 3}, {Site: "parse_header", Every: 100}}
	heap.Freed = true
	hunt := defaults(session.Spec{Symbol: "val"})
	hunt.When, _ = cond.Parse("new > 5 && in(parse_*)")
	hunt.OnHit, hunt.MaxWrites, hunt.Last, hunt.Summary, hunt.Color = "stop", 3, 10, true, "never"
	calls := defaults()
	calls.Args = []session.ArgSpec{{Func: "fill_record", N: 1, Len: 64}, {Func: "Session::create", N: 2}, {Func: "ns::Pool::take", N: 7, Len: 0x10}}
	calls.Locals = []session.LocalSpec{{Func: "process_batch", Var: "scratch"}, {Func: "ns::f", Var: "buf"}}
	for _, c := range []struct {
		name string
		args []string
		want any // a *RunOptions or *AttachOptions; its IO is the streams'
	}{
		{"the hunt's flags", []string{"run", "--symbol", "val", "--when", "new > 5 && in(parse_*)", "--on-hit", "stop",
			"--max-writes", "3", "--last", "10", "--summary", "--color", "never", "--", "p"},
			&RunOptions{Watch: hunt, Argv: []string{"p"}}},
		{"addr and len", []string{"run", "--addr", "0x404040", "--len", "64", "--", "./server", "--port", "8080"},
			&RunOptions{Watch: defaults(session.Spec{Addr: 0x404040, Len: 64}), Argv: []string{"./server", "--port", "8080"}}},
		{"decimal addr, its len first", []string{"run", "--len", "16", "--addr", "4096", "--", "p"},
			&RunOptions{Watch: defaults(session.Spec{Addr: 4096, Len: 16}), Argv: []string{"p"}}},
		{"symbol+OFF with a len", []string{"run", "--symbol", "session+8", "--len", "8", "--", "p"},
			&RunOptions{Watch: defaults(session.Spec{Symbol: "session+8", Len: 8}), Argv: []string{"p"}}},
		{"symbol sized by its table", []string{"run", "--symbol", "session.token", "--", "p"},
			&RunOptions{Watch: defaults(session.Spec{Symbol: "session.token"}), Argv: []string{"p"}}},
		{"repeated specs in order, each --len its own", []string{"run", "--symbol", "config", "--addr", "0x10", "--len", "4",
			"--symbol", "libc.so.6:environ", "--symbol", "stats+16", "--len", "8", "--", "p"},
			&RunOptions{Watch: defaults(session.Spec{Symbol: "config"}, session.Spec{Addr: 0x10, Len: 4},
				session.Spec{Symbol: "libc.so.6:environ"}, session.Spec{Symbol: "stats+16", Len: 8}), Argv: []string{"p"}}},
		{"after -- every flag is the program's", []string{"run", "--symbol", "x", "--", "p", "--symbol", "y", "-o", "z", "--"},
			&RunOptions{Watch: defaults(session.Spec{Symbol: "x"}), Argv: []string{"p", "--symbol", "y", "-o", "z", "--"}}},
		{"without --, from the program on", []string{"run", "--symbol", "x", "p", "--len", "3"},
			&RunOptions{Watch: defaults(session.Spec{Symbol: "x"}), Argv: []string{"p", "--len", "3"}}},
		{"every other flag", []string{"run", "--symbol", "refcount", "--when-value", "0", "--width", "4", "--backtrace", "0",
			"--format", "json", "-o", "writes.jsonl", "--engine", "hw", "--follow-forks", "--pending",
			"--kernel-writes=false", "--completer", "step", "--", "p"},
			&RunOptions{Watch: every, Output: "writes.jsonl", Argv: []string{"p"}}},
		{"when-value in hex, up to the top of user space", []string{"run", "--addr", "0x7ffffffff000", "--len", "0x1000",
			"--when-value", "0x5EC0DE", "--", "p"},
			&RunOptions{Watch: hexValue, Argv: []string{"p"}}},
		{"attach: pid then flags", []string{"attach", "1234", "--symbol", "config", "--when-value", "0"},
			&AttachOptions{Watch: whenZero, Pid: 1234}},
		{"attach: flags around the pid", []string{"attach", "--addr", "0x7f12a4c01000", "1234", "--len", "64", "-o", "-"},
			&AttachOptions{Watch: defaults(session.Spec{Addr: 0x7f12a4c01000, Len: 64}), Output: "-", Pid: 1234}},
		{"attach: module:name, pending", []string{"attach", "1", "--symbol", "libc.so.6:environ", "--pending"},
			&AttachOptions{Watch: pending, Pid: 1}},
		{"--arg and --local, C++ names too", []string{"run", "--arg", "fill_record:1:64", "--arg", "Session::create:2",
			"--arg", "ns::Pool::take:7:0x10", "--local", "process_batch:scratch", "--local", "ns::f:buf", "--", "p"},
			&RunOptions{Watch: calls, Argv: []string{"p"}}},
		{"heap specs, in order, and --freed", []string{"run", "--heap", "size=40", "--heap", "size=32-64,site=Session::create,nth=3",
			"--heap", "site=parse_header,every=100", "--freed", "--", "p"},
			&RunOptions{Watch: heap, Argv: []string{"p"}}},
	} {
		t.Run(c.name, func(t *testing.T) {
			v := parse(c.args...)
			if v.code != 0 || v.stderr != "" || v.stdout != "" || v.got == nil {
				t.Fatalf("exit %d, ran %v, stdout %q, stderr %q", v.code, v.got != nil, v.stdout, v.stderr)
			}
			switch w := c.want.(type) {
			case *RunOptions:
				w.IO = v.io
			case *AttachOptions:
				w.IO = v.io
			}
			if !reflect.DeepEqual(v.got, c.want) {
				t.Errorf("options\n got %+v\nwant %+v", v.got, c.want)
			}
		})
	}
}

// A usage error is one line on stderr and exit 2, and the verb never runs.
func TestUsageErrors(t *testing.T) {
	for _, c := range []struct {
		name string
		args []string
		want string // stderr, without "memtrap: " and the newline
	}{
		{"addr without len", []string{"run", "--addr", "0x1000", "--", "p"}, "--addr 0x1000 needs --len N"},
		{"addr without len, as given", []string{"run", "--symbol", "x", "--addr", "4096", "--", "p"}, "--addr 4096 needs --len N"},
		{"len 0", []string{"run", "--addr", "0x1000", "--len", "0", "--", "p"},
			`invalid argument "0" for "--len" flag: length 0: a region needs at least one byte`},
		{"a len too many", []string{"run", "--symbol", "x", "--len", "4", "--len", "8", "--", "p"}, "--len 8 follows no --addr or --symbol"},
		{"two lens in a row", []string{"run", "--len", "4", "--len", "8", "--symbol", "x", "--", "p"},
			`invalid argument "8" for "--len" flag: two --len values with no --addr or --symbol between them`},
		{"malformed len", []string{"run", "--addr", "0x1000", "--len", "eight", "--", "p"},
			`invalid argument "eight" for "--len" flag: malformed number "eight" (want decimal or 0x hex)`},
		{"malformed addr", []string{"run", "--addr", "0x12zz", "--len", "8", "--", "p"},
			`invalid argument "0x12zz" for "--addr" flag: malformed number "0x12zz" (want decimal or 0x hex)`},
		{"huge addr", []string{"run", "--addr", "99999999999999999999999", "--len", "8", "--", "p"},
			`invalid argument "99999999999999999999999" for "--addr" flag: number "99999999999999999999999" is too large`},
		{"wraps around", []string{"run", "--addr", "0xffffffffffffff00", "--len", "0x1000", "--", "p"},
			"--addr 0xffffffffffffff00 --len 4096 runs past the end of the address space"},
		{"past user space", []string{"run", "--addr", "0x7ffffffff000", "--len", "0x1001", "--", "p"},
			"--addr 0x7ffffffff000 --len 4097 runs past the end of the address space"},
		{"empty symbol", []string{"run", "--symbol", " ", "--", "p"}, `invalid argument " " for "--symbol" flag: empty symbol name`},
		{"width 3", []string{"run", "--symbol", "x", "--width", "3", "--", "p"}, "--width 3: must be 1, 2, 4 or 8"},
		{"backtrace -1", []string{"run", "--symbol", "x", "--backtrace", "-1", "--", "p"}, "--backtrace -1: must be 0 or more"},
		{"engine bogus", []string{"run", "--symbol", "x", "--engine", "bogus", "--", "p"}, `--engine "bogus": must be auto, page, hw or fast`},
		{"fast, heap", []string{"run", "--heap", "size=8", "--engine", "fast", "--", "p"},
			"--engine fast watches --addr and --symbol regions; --heap, --arg and --local need the page engine"},
		{"fast, forks", []string{"run", "--symbol", "x", "--engine", "fast", "--follow-forks", "--", "p"},
			"--engine fast does not follow forks yet (a child gets its pages back); --follow-forks needs the page engine"},
		{"fast, on-hit", []string{"run", "--symbol", "x", "--engine", "fast", "--on-hit", "stop", "--", "p"},
			"--engine fast cannot stop the target at a write (it has run on by the time memtrap reads it); --on-hit needs the page engine"},
		{"fast, attach", []string{"attach", "1", "--symbol", "x", "--engine", "fast", "--kernel-writes=false"},
			"attach: --engine fast is for memtrap run only (the agent and its syscall filter cannot be taken out of a process again)"},
		{"format xml", []string{"run", "--symbol", "x", "--format", "xml", "--", "p"}, `--format "xml": must be text or json`},
		{"completer", []string{"run", "--symbol", "x", "--completer", "fast", "--", "p"}, `--completer "fast": must be emulate or step`},
		{"when-value", []string{"run", "--symbol", "x", "--when-value", "-1", "--", "p"},
			`--when-value: malformed number "-1" (want decimal or 0x hex)`},
		{"bad bool", []string{"run", "--symbol", "x", "--kernel-writes=maybe", "--", "p"},
			`--kernel-writes maybe: want true or false`},
		{"nothing to watch", []string{"run", "--", "p"}, "nothing to watch: give --addr ADDR --len N, --symbol NAME or --heap SPEC"},
		{"no program", []string{"run", "--symbol", "x"}, "run: no program given (memtrap run [flags] -- PROGRAM [ARGS...])"},
		{"no program after --", []string{"run", "--symbol", "x", "--"}, "run: no program given (memtrap run [flags] -- PROGRAM [ARGS...])"},
		{"unknown flag", []string{"run", "--bogus", "--", "p"}, "unknown flag: --bogus"},
		{"flag without its value", []string{"run", "--symbol"}, "flag needs an argument: --symbol"},
		{"no pid", []string{"attach", "--symbol", "x"}, "attach: want exactly one PID, got 0 arguments"},
		{"two pids", []string{"attach", "1", "2", "--symbol", "x"}, "attach: want exactly one PID, got 2 arguments"},
		{"bad pid", []string{"attach", "12ab", "--symbol", "x"}, `attach: "12ab" is not a process id`},
		{"pid 0", []string{"attach", "0", "--symbol", "x"}, `attach: "0" is not a process id`},
		{"attach, nothing to watch", []string{"attach", "1234"}, "nothing to watch: give --addr ADDR --len N, --symbol NAME or --heap SPEC"},
		{"attach, addr without len", []string{"attach", "1234", "--addr", "0x1000"}, "--addr 0x1000 needs --len N"},
		{"symbol offset not a number", []string{"run", "--symbol", "cfg+zz", "--", "p"}, `invalid argument "cfg+zz" for "--symbol" flag: offset "zz" is not a number (decimal or 0x hex)`},
		{"unknown verb", []string{"watch", "1234"}, `unknown command "watch" for "memtrap"`},
		{"report without a file", []string{"report"}, "report: want one FILE (a --format json report, or - for standard input), got 0 arguments"},
		{"malformed --when", []string{"run", "--symbol", "x", "--when", "new >> ", "--", "p"}, `--when "new >> ": column 8: expected a value, found end of expression`},
		{"--when freed without --freed", []string{"run", "--heap", "size=8", "--when", "freed && off == 0", "--", "p"},
			`--when "freed && off == 0": freed is 0 at every write without --freed`},
		{"--when overflow without --redzone", []string{"run", "--heap", "size=8", "--freed", "--when", "!overflow", "--", "p"},
			`--when "!overflow": overflow is 0 at every write without --redzone N`},
		{"--when block without --heap", []string{"run", "--symbol", "x", "--when", "block == 2", "--", "p"},
			`--when "block == 2": block is 0 at every write without --heap`},
		{"colour", []string{"run", "--symbol", "x", "--color", "blue", "--", "p"}, `--color "blue": must be auto, always or never`},
		{"heap without size or site", []string{"run", "--heap", "nth=2", "--", "p"}, "--heap nth=2: give size=N (or MIN-MAX) or site=FUNC"},
		{"heap size 0", []string{"run", "--heap", "size=0", "--", "p"}, "--heap size=0: size 0: a watched block needs at least one byte"},
		{"heap min over max", []string{"run", "--heap", "size=64-32", "--", "p"}, "--heap size=64-32: size range 64-32 is empty (MIN > MAX)"},
		{"heap nth 0", []string{"run", "--heap", "size=8,nth=0", "--", "p"}, "--heap size=8,nth=0: nth must be a number from 1 on"},
		{"heap every 0", []string{"run", "--heap", "size=8,every=0", "--", "p"}, "--heap size=8,every=0: every must be a number from 1 on"},
		{"heap unknown key", []string{"run", "--heap", "size=8,colour=red", "--", "p"}, `--heap size=8,colour=red: unknown key "colour" (keys: size, site, nth, every)`},
		{"heap not key=value", []string{"run", "--heap", "40", "--", "p"}, `--heap 40: "40" is not KEY=VALUE (keys: size, site, nth, every)`},
		{"heap bad size", []string{"run", "--heap", "size=4x", "--", "p"}, `--heap size=4x: size: malformed number "4x" (want decimal or 0x hex)`},
		{"freed without heap", []string{"run", "--symbol", "x", "--freed", "--", "p"}, "--freed needs --heap: it says how long a heap block is watched"},
		{"redzone without heap", []string{"run", "--symbol", "x", "--redzone", "8", "--", "p"}, "--redzone needs --heap: it watches past the end of heap blocks"},
		{"redzone too large", []string{"run", "--heap", "size=8", "--redzone", "5000", "--", "p"}, "--redzone 5000: at most 4096 bytes"},
		{"heap on hw", []string{"run", "--heap", "size=8", "--engine", "hw", "--", "p"}, "--heap, --arg and --local need the page engine: blocks and frames come and go by the thousand, the debug registers hold four"},
	} {
		t.Run(c.name, func(t *testing.T) {
			v := parse(c.args...)
			if v.got != nil {
				t.Errorf("the verb ran with %+v", v.got)
			}
			if want := "memtrap: " + c.want + "\n"; v.code != exitUsage || v.stderr != want || v.stdout != "" {
				t.Errorf("exit %d, stdout %q, stderr\n %q\nwant exit 2,\n %q", v.code, v.stdout, v.stderr, want)
			}
		})
	}
}

func TestVersion(t *testing.T) {
	for _, args := range [][]string{{"version"}, {"--version"}} {
		if v := parse(args...); v.code != 0 || v.stdout != "memtrap "+version+"\n" || v.stderr != "" {
			t.Fatalf("%v: exit %d, stdout %q, stderr %q", args, v.code, v.stdout, v.stderr)
		}
	}
}

// TestCompletion: cobra's scripts for each shell; bash's, sourced by a
// real bash, registers a completion for memtrap.
func TestCompletion(t *testing.T) {
	for shell, head := range map[string]string{"bash": "# bash completion V2 for memtrap", "zsh": "#compdef memtrap", "fish": "# fish completion for memtrap"} {
		if v := parse("completion", shell); v.code != 0 || !strings.HasPrefix(v.stdout, head) {
			t.Errorf("completion %s: exit %d, starts %q", shell, v.code, v.stdout[:min(len(v.stdout), 40)])
		}
	}
	script := parse("completion", "bash").stdout
	f := filepath.Join(t.TempDir(), "memtrap.bash")
	if err := os.WriteFile(f, []byte(script), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("bash", "-c", "source "+f+" && complete -p memtrap").CombinedOutput()
	if err != nil || !strings.Contains(string(out), "complete -o default -F __start_memtrap memtrap") {
		t.Errorf("bash: %v: %s", err, out)
	}
}

// TestManPages: a page per command, made from the commands, that groff
// renders without a warning, with every flag of run on run's page.
func TestManPages(t *testing.T) {
	dir := t.TempDir()
	if v := parse("man", dir); v.code != 0 {
		t.Fatalf("man: exit %d, %s", v.code, v.stderr)
	}
	for _, page := range []string{"memtrap.1", "memtrap-run.1", "memtrap-attach.1", "memtrap-version.1", "memtrap-completion.1"} {
		f := filepath.Join(dir, page)
		b, err := os.ReadFile(f)
		if err != nil || !strings.HasPrefix(string(b), ".TH MEMTRAP") {
			t.Fatalf("%s: %v %q", page, err, string(b[:min(len(b), 40)]))
		}
		out, err := exec.Command("groff", "-man", "-Tutf8", "-ww", f).CombinedOutput()
		if err != nil || strings.Contains(string(out), "warning") {
			t.Errorf("%s: groff: %v %s", page, err, out)
		}
	}
	run, _ := os.ReadFile(filepath.Join(dir, "memtrap-run.1"))
	for _, flag := range []string{"addr", "symbol", "heap", "freed", "redzone", "arg", "local", "engine", "follow\\-forks", "kernel\\-writes"} {
		if !strings.Contains(string(run), `\fB\-\-`+flag+`\fR`) {
			t.Errorf("memtrap-run.1 lacks --%s", flag)
		}
	}
}
