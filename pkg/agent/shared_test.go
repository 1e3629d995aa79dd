package agent

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/memtrap/memtrap/internal/fixture"
)

// TestServed: the harness's agent with no recipe at all, served by this
// test as memtrap will serve a target's: each store site's first fault
// asks for its recipe, which the server makes from the code it reads in
// the harness's memory (RecipeFor), or declines; the server takes every
// record, in order, exact. The harness's own output is as with its
// hand-written recipes.
func TestServed(t *testing.T) {
	bin := harness(t, "-no-pie")
	blobPath := filepath.Join(t.TempDir(), "agent.bin")
	if err := os.WriteFile(blobPath, Blob(), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, blobPath, "--served")
	stdin, _ := cmd.StdinPipe()
	stdout, _ := cmd.StdoutPipe()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill()
	rd := bufio.NewReader(stdout)
	var fd int
	if l, err := rd.ReadString('\n'); err != nil || func() error { _, err := fmt.Sscanf(l, "memfd %d", &fd); return err }() != nil {
		t.Fatalf("harness: %q %v", l, err)
	}
	pid := cmd.Process.Pid
	f, err := os.OpenFile(fmt.Sprintf("/proc/%d/fd/%d", pid, fd), os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	s, err := MapShared(int(f.Fd()))
	f.Close()
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	mem, err := os.OpenFile(fmt.Sprintf("/proc/%d/mem", pid), os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer mem.Close()
	decline := fixture.Symbol(t, bin, "storemiss")
	xadd := fixture.Symbol(t, bin, "storexadd")
	sites := map[uint64]string{xadd: "storexadd"}
	for _, n := range []string{"store8", "store4", "store1", "storerip"} {
		sites[fixture.Symbol(t, bin, n)] = n
	}

	// The server: answers requests, takes records, until the harness ends.
	type served struct {
		asked   []string
		records []Record
		err     error
	}
	done := make(chan struct{})
	result := make(chan served, 1)
	go func() {
		var out served
		defer func() { result <- out }()
		var r Record
		for {
			answered, err := s.Serve(mem, func(pc uint64) bool { return pc == decline }, nil)
			if err != nil {
				out.err = err
				return
			}
			for _, a := range answered {
				name := sites[a.PC]
				switch {
				case a.Err != nil:
					out.err = a.Err
					return
				case a.PC == decline && a.Kind == ReqComplete:
					name = "storemiss (not done)"
				case a.PC == decline:
					name = "storemiss (declined)"
				case a.Kind == ReqComplete:
					name = "complete " + name
				}
				out.asked = append(out.asked, name)
			}
			for s.Next(&r) {
				out.records = append(out.records, r)
			}
			select {
			case <-done:
				for s.Next(&r) {
					out.records = append(out.records, r)
				}
				return
			default:
			}
			s.Wait(time.Millisecond)
		}
	}()
	if _, err := stdin.Write([]byte("go\n")); err != nil {
		t.Fatal(err)
	}
	var rest strings.Builder
	for {
		l, err := rd.ReadString('\n')
		rest.WriteString(l)
		if err != nil {
			break
		}
	}
	werr := cmd.Wait()
	close(done)
	got := <-result
	if got.err != nil {
		t.Fatal(got.err)
	}
	want := harnessWant + "lock xadd, done by the server: returned 0 then 5, memory 10, records 1005\n"
	if werr != nil || rest.String() != want {
		t.Fatalf("harness: %v\n%s\nwant:\n%s", werr, rest.String(), want)
	}
	if want := "store8 store4 store1 storerip storemiss (declined) storemiss (not done) storexadd complete storexadd complete storexadd"; strings.Join(got.asked, " ") != want {
		t.Errorf("requests %q, want %q", got.asked, want)
	}
	if len(got.records) != 1005 {
		t.Fatalf("%d records, want 1005", len(got.records))
	}
	for i, r := range got.records {
		want := struct {
			site     string
			old, new uint64
		}{"store8", uint64(i), uint64(i + 1)}
		switch i {
		case 1000:
			want.site, want.old, want.new = "store4", 0, 0x11223344
		case 1001:
			want.site, want.old, want.new = "store1", 0, 0x5a
		case 1002:
			want.site, want.old, want.new = "storerip", 0, ^uint64(1)
		case 1003:
			want.site, want.old, want.new = "storexadd", 0, 5
		case 1004:
			want.site, want.old, want.new = "storexadd", 5, 10
		}
		if r.Seq != uint64(i) || sites[r.PC] != want.site || r.Old != want.old || r.New != want.new || int(r.Tid) != pid {
			t.Fatalf("record %d: seq %d %s old %#x new %#x tid %d; want %s %#x -> %#x by %d", i, r.Seq, sites[r.PC], r.Old, r.New, r.Tid, want.site, want.old, want.new, pid)
		}
	}
}
