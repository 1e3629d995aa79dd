package session

import (
	"bufio"
	"bytes"
	"encoding/json"
	"testing"

	"github.com/memtrap/memtrap/internal/fixture"
)

// A session needs no CLI: Run reports on the stream it is given and
// returns the target's exit code.
func TestRunReportsToOut(t *testing.T) {
	prog := fixture.Build(t, "examples/stomp.c", "-O0", "-g")
	t.Setenv("XDG_CACHE_HOME", t.TempDir()) // not the user's DWARF index cache
	var out bytes.Buffer
	code, err := Run(Options{
		Specs: []Spec{{Symbol: "session+8", Len: 8}}, Width: 8, Backtrace: 2, Engine: "page",
		Completer: "emulate", KernelWrites: true, Format: "json", Out: &out,
	}, []string{prog})
	if err != nil {
		t.Fatal(err)
	}
	type event struct {
		Event     string
		Region    string
		Insn      string
		Code      *int
		Writes    int
		Backtrace []struct{ Func string }
	}
	var evs []event
	sc := bufio.NewScanner(&out)
	for sc.Scan() {
		var e event
		if err := json.Unmarshal(sc.Bytes(), &e); err != nil {
			t.Fatalf("not JSON: %q: %v", sc.Text(), err)
		}
		evs = append(evs, e)
	}
	if code != 3 || len(evs) != 9 || evs[0].Event != "watch" || evs[8].Event != "exit" || evs[8].Code == nil ||
		*evs[8].Code != 3 || evs[8].Writes != 7 {
		t.Fatalf("exit %d, events %+v", code, evs)
	}
	for _, e := range evs[1:8] {
		// The instruction too: pagewatch names it only once the writer
		// runs again, after onReport.
		if e.Event != "write" || e.Region != "session+8" || e.Insn == "" || len(e.Backtrace) != 2 {
			t.Fatalf("not a write of session+8 with its instruction and 2 frames: %+v", e)
		}
	}
	if f := evs[1].Backtrace[0].Func; f != "issue_token" {
		t.Errorf("first writer %q, want issue_token", f)
	}
	if f := evs[2].Backtrace[0].Func; f != "set_user" {
		t.Errorf("second writer %q, want set_user", f)
	}
}
