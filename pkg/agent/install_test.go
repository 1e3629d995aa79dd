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
	"golang.org/x/arch/x86/x86asm"
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
	watched := fixture.Symbol(t, bin, "watched")
	outR, outW, _ := os.Pipe()
	errR, errW, _ := os.Pipe()
	var in *Installed
	var pid int
	err = tracer.Locked(func() error {
		p, err := tracer.Launch([]string{bin, fmt.Sprint(rounds)}, tracer.LaunchOptions{Stdio: [3]*os.File{nil, outW, errW}})
		if err != nil {
			return err
		}
		pid = p.Pid
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
		a.PageList[0], a.NPages, a.Served = watched, 1, 1
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
	mem, err := os.Open(fmt.Sprintf("/proc/%d/mem", pid))
	if err != nil {
		t.Fatal(err)
	}
	defer mem.Close()

	exited := make(chan unix.WaitStatus, 1)
	go func() {
		var ws unix.WaitStatus
		for {
			if _, err := unix.Wait4(pid, &ws, 0, nil); err != unix.EINTR {
				break
			}
		}
		exited <- ws
	}()
	outC := make(chan string, 2)
	go func() { b, _ := io.ReadAll(outR); outC <- string(b) }()
	go func() { b, _ := io.ReadAll(errR); outC <- string(b) }()
	s := in.Shared
	var recs []Record
	asked := 0
	var ws unix.WaitStatus
	deadline := time.After(time.Minute)
	for done := false; !done; {
		for _, i := range s.Posted() {
			q := s.Request(i)
			code := make([]byte, 15)
			if _, err := mem.ReadAt(code, int64(q.PC)); err != nil {
				t.Fatal(err)
			}
			r := Recipe{PC: q.PC}
			if inst, err := x86asm.Decode(code, 64); err == nil {
				r, _ = RecipeFor(q.PC, inst)
				r.PC = q.PC
			}
			asked++
			if err := s.Answer(i, r); err != nil {
				t.Fatal(err)
			}
		}
		var r Record
		for s.Next(&r) {
			recs = append(recs, r)
		}
		select {
		case ws = <-exited:
			for s.Next(&r) {
				recs = append(recs, r)
			}
			done = true
		case <-deadline:
			t.Fatalf("the target did not end in a minute (%d records)", len(recs))
		default:
			s.Wait(time.Millisecond)
		}
	}
	out1, out2 := <-outC, <-outC
	stdout, stderr := out1, out2
	if strings.HasSuffix(out1, "ns per round\n") {
		stdout, stderr = out2, out1
	}
	if !ws.Exited() || ws.ExitStatus() != 7 || stdout != native {
		t.Fatalf("target: %v, stdout %q (native %q), stderr %q", ws, stdout, native, stderr)
	}
	if asked != 2 || len(recs) != 2*rounds {
		t.Fatalf("%d requests (want 2), %d records (want %d); misses %d, chained %d", asked, len(recs), 2*rounds, s.Area().Misses, s.Area().Chained)
	}
	for i, r := range recs {
		round := uint64(i/2 + 1)
		addr, val, old := watched, round, round-1
		if i%2 == 1 {
			addr, val, old = watched+8*(8+round%8), 3*round, 0
			if round > 8 {
				old = 3 * (round - 8)
			}
		}
		if r.Seq != uint64(i) || r.Addr != addr || r.New != val || r.Old != old || int(r.Tid) != pid {
			t.Fatalf("record %d: addr %#x %#x -> %#x tid %d; want %#x %#x -> %#x by %d", i, r.Addr, r.Old, r.New, r.Tid, addr, old, val, pid)
		}
	}
	t.Logf("agent in a target with no tracer: %s", strings.TrimSpace(stderr))
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
