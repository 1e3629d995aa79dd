package guard

import (
	"encoding/binary"
	"encoding/json"
	"os"
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

// TestFrames: the guardian keeps the last whole State of each process; a
// frame cut short by memtrap's death is not one, an empty State ends a
// child's guarding, and the end frame ends it all.
func TestFrames(t *testing.T) {
	a := &State{Pid: 7, Pages: []Pages{{0x1000, 0x2000, 3}}, DebugRegs: true}
	b := &State{Pid: 7, Breakpoints: []Breakpoint{{Addr: 0x4000, Orig: 0x55, Len: 1, Slot: 0x9000}}}
	// A followed child: a process that exists, for its pidfd.
	child := os.Getpid()
	c1 := &State{Pid: child, Pages: []Pages{{0x1000, 0x1000, 1}}}
	gone := &State{Pid: child}
	cases := []struct {
		name  string
		bytes func() []byte
		want  map[int]*State
		ended bool
	}{
		{"two whole", func() []byte { return append(frame(t, a), frame(t, b)...) }, map[int]*State{7: b}, false},
		{"second cut short", func() []byte { f := frame(t, b); return append(frame(t, a), f[:len(f)-3]...) }, map[int]*State{7: a}, false},
		{"header cut short", func() []byte { return append(frame(t, a), 9, 0) }, map[int]*State{7: a}, false},
		{"end", func() []byte { return append(frame(t, a), 0xff, 0xff, 0xff, 0xff) }, map[int]*State{7: a}, true},
		{"nothing", func() []byte { return nil }, nil, false},
		{"a child", func() []byte { return append(frame(t, a), frame(t, c1)...) }, map[int]*State{7: a, child: c1}, false},
		{"a child ended", func() []byte { return append(append(frame(t, c1), frame(t, a)...), frame(t, gone)...) }, map[int]*State{7: a}, false},
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
		f := frames{root: 7}
		for !f.closed && !f.ended {
			f.read(fds[0])
		}
		unix.Close(fds[0])
		if len(f.states) != len(c.want) || f.ended != c.ended {
			t.Errorf("%s: states %+v ended %v, want %+v %v", c.name, f.states, f.ended, c.want, c.ended)
			continue
		}
		for pid, s := range c.want {
			if !reflect.DeepEqual(f.states[pid], s) {
				t.Errorf("%s: process %d: %+v, want %+v", c.name, pid, f.states[pid], s)
			}
		}
		_, open := f.pidfds[child]
		if _, guarded := c.want[child]; open != guarded {
			t.Errorf("%s: the child's pidfd open: %v, want %v", c.name, open, guarded)
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
