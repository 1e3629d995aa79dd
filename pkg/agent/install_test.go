package agent

import (
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/memtrap/memtrap/internal/fixture"
	"github.com/memtrap/memtrap/pkg/tracer"
	"golang.org/x/sys/unix"
)

// TestInstalled: the agent mapped into a launched target by injected
// system calls (Install, Arm), a page armed, and the target let go (no
// tracer at all). Its stores to the page are completed by the agent and
// recorded, every one, in order, the recipes asked for once per site and
// answered from the target's code as memtrap will; the target's output
// and exit status are its own.
func TestInstalled(t *testing.T) {
	const rounds = 2000
	bin := fixture.Build(t, "pkg/agent/testdata/target.c", "-O1", "-no-pie")
	native, err := runNative(bin, rounds)
	if err != nil || native != "last 2000 6000\n" {
		t.Fatalf("native: %q %v", native, err)
	}
	run := runInstalled(t, bin, rounds, true)
	if !run.status.Exited() || run.status.ExitStatus() != 7 || run.stdout != native {
		t.Fatalf("target: %v, stdout %q (native %q), stderr %q", run.status, run.stdout, native, run.stderr)
	}
	if run.asked != 2 || len(run.records) != 2*rounds {
		t.Fatalf("%d requests (want 2), %d records (want %d); misses %d, chained %d", run.asked, len(run.records), 2*rounds, run.misses, run.chained)
	}
	watched := fixture.Symbol(t, bin, "watched")
	for i, r := range run.records {
		round := uint64(i/2 + 1)
		addr, val, old := watched, round, round-1
		if i%2 == 1 {
			addr, val, old = watched+8*(8+round%8), 3*round, 0
			if round > 8 {
				old = 3 * (round - 8)
			}
		}
		if r.Seq != uint64(i) || r.Addr != addr || r.New != val || r.Old != old || int(r.Tid) != run.pid {
			t.Fatalf("record %d: addr %#x %#x -> %#x tid %d; want %#x %#x -> %#x by %d", i, r.Addr, r.Old, r.New, r.Tid, addr, old, val, run.pid)
		}
	}
	t.Logf("agent in a target with no tracer: %s", strings.TrimSpace(run.stderr))
}

// BenchmarkAgentInTarget: a trapped write completed by the agent in a
// launched target that no tracer holds, served by this process as memtrap
// will serve it (recipes asked for once per site; every record taken):
// the target's own time per write. Next to make bench's ptrace floor and
// in-process floor.
func BenchmarkAgentInTarget(b *testing.B) {
	bin := fixture.Build(b, "pkg/agent/testdata/target.c", "-O1", "-no-pie")
	rounds := max(b.N, 1000)
	run := runInstalled(b, bin, rounds, false)
	var ns float64
	if _, err := fmt.Sscanf(run.stderr, "%g ns per round", &ns); err != nil || run.taken != 2*rounds {
		b.Fatalf("target: %q, %d records", run.stderr, run.taken)
	}
	b.ReportMetric(ns/2/1000, "us/write")
	b.ReportMetric(0, "ns/op")
}

// installedRun is what runInstalled saw.
type installedRun struct {
	pid             int
	status          unix.WaitStatus
	stdout, stderr  string
	records         []Record // with keep
	taken           int      // records taken
	asked           int
	misses, chained uint64
}

// runInstalled launches bin rounds with the agent installed over its
// `watched` page, lets it go, and serves it until it ends, keeping the
// records if keep.
func runInstalled(t testing.TB, bin string, rounds int, keep bool) installedRun {
	t.Helper()
	watched := fixture.Symbol(t, bin, "watched")
	outR, outW, _ := os.Pipe()
	errR, errW, _ := os.Pipe()
	var in *Installed
	var run installedRun
	err := tracer.Locked(func() error {
		p, err := tracer.Launch([]string{bin, fmt.Sprint(rounds)}, tracer.LaunchOptions{Stdio: [3]*os.File{nil, outW, errW}})
		if err != nil {
			return err
		}
		run.pid = p.Pid
		th, err := p.RunToEntry()
		if err != nil {
			p.Kill()
			return err
		}
		if in, err = Install(p, th); err != nil {
			p.Kill()
			return err
		}
		a := in.Shared.Area()
		a.PageList[0], a.Prots[0], a.NPages, a.Served = watched, unix.PROT_READ|unix.PROT_WRITE, 1, 1
		if err := th.Mprotect(watched, 4096, unix.PROT_READ); err != nil {
			p.Kill()
			return err
		}
		if err := in.Arm(th); err != nil {
			p.Kill()
			return err
		}
		return p.Detach()
	})
	outW.Close()
	errW.Close()
	if err != nil {
		t.Fatal(err)
	}
	defer in.Shared.Close()
	mem, err := os.Open(fmt.Sprintf("/proc/%d/mem", run.pid))
	if err != nil {
		t.Fatal(err)
	}
	defer mem.Close()
	exited := make(chan unix.WaitStatus, 1)
	go func() {
		var ws unix.WaitStatus
		for {
			if _, err := unix.Wait4(run.pid, &ws, 0, nil); err != unix.EINTR {
				break
			}
		}
		exited <- ws
	}()
	stdoutC, stderrC := make(chan string, 1), make(chan string, 1)
	go func() { b, _ := io.ReadAll(outR); stdoutC <- string(b) }()
	go func() { b, _ := io.ReadAll(errR); stderrC <- string(b) }()
	s := in.Shared
	deadline := time.After(time.Minute)
	for done := false; !done; {
		answered, err := s.Serve(mem, nil, nil)
		if err != nil {
			t.Fatal(err)
		}
		run.asked += len(answered)
		var r Record
		take := func() {
			for s.Next(&r) {
				run.taken++
				if keep {
					run.records = append(run.records, r)
				}
			}
		}
		take()
		select {
		case run.status = <-exited:
			take()
			done = true
		case <-deadline:
			t.Fatalf("the target did not end in a minute (%d records)", len(run.records))
		default:
			s.Wait(time.Millisecond)
		}
	}
	run.stdout, run.stderr = <-stdoutC, <-stderrC
	run.misses, run.chained = s.Area().Misses, s.Area().Chained
	return run
}

func runNative(bin string, rounds int) (string, error) {
	var out strings.Builder
	cmd := exec.Command(bin, fmt.Sprint(rounds))
	cmd.Stdout = &out
	err := cmd.Run()
	if ee, ok := err.(interface{ ExitCode() int }); ok && ee.ExitCode() == 7 {
		err = nil
	}
	return out.String(), err
}
