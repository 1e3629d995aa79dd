package guard

import (
	"encoding/binary"
	"encoding/json"
	"reflect"
	"testing"

	"golang.org/x/sys/unix"
)

// frame is one State as memtrap sends it.
func frame(t *testing.T, s *State) []byte {
	t.Helper()
	b, err := json.Marshal(s)
	if err != nil {
		t.Fatal(err)
	}
	return append(binary.LittleEndian.AppendUint32(nil, uint32(len(b))), b...)
}

// TestFrames: the guardian keeps the last whole State; a frame cut short
// by memtrap's death is not one, and the end frame ends it all.
func TestFrames(t *testing.T) {
	a := &State{Pid: 7, Pages: []Pages{{0x1000, 0x2000, 3}}, DebugRegs: true}
	b := &State{Pid: 7, Breakpoints: []Breakpoint{{Addr: 0x4000, Orig: 0x55, Len: 1, Slot: 0x9000}}}
	cases := []struct {
		name  string
		bytes func() []byte
		last  *State
		ended bool
	}{
		{"two whole", func() []byte { return append(frame(t, a), frame(t, b)...) }, b, false},
		{"second cut short", func() []byte { f := frame(t, b); return append(frame(t, a), f[:len(f)-3]...) }, a, false},
		{"header cut short", func() []byte { return append(frame(t, a), 9, 0) }, a, false},
		{"end", func() []byte { return append(frame(t, a), 0xff, 0xff, 0xff, 0xff) }, a, true},
		{"nothing", func() []byte { return nil }, nil, false},
	}
	for _, c := range cases {
		var fds [2]int
		if err := unix.Pipe(fds[:]); err != nil {
			t.Fatal(err)
		}
		in := c.bytes()
		go func() {
			// One byte at a time: frames arrive in pieces.
			for i := range in {
				unix.Write(fds[1], in[i:i+1])
			}
			unix.Close(fds[1])
		}()
		var f frames
		for !f.closed && !f.ended {
			f.read(fds[0])
		}
		unix.Close(fds[0])
		if !reflect.DeepEqual(f.last, c.last) || f.ended != c.ended {
			t.Errorf("%s: last %+v ended %v, want %+v %v", c.name, f.last, f.ended, c.last, c.ended)
		}
	}
}

// TestAddPage: adjacent pages of one protection make one run.
func TestAddPage(t *testing.T) {
	var s State
	s.AddPage(0x1000, 0x1000, 3)
	s.AddPage(0x2000, 0x1000, 3)
	s.AddPage(0x3000, 0x1000, 1)
	s.AddPage(0x5000, 0x1000, 1)
	want := []Pages{{0x1000, 0x2000, 3}, {0x3000, 0x1000, 1}, {0x5000, 0x1000, 1}}
	if !reflect.DeepEqual(s.Pages, want) {
		t.Fatalf("pages %+v, want %+v", s.Pages, want)
	}
	if s.Empty() {
		t.Fatal("a state with pages is empty")
	}
}
