package unwind

import (
	"slices"
	"strings"
	"sync"
	"testing"
)

// ourChain is the call chain of testdata/stack.c below its innermost
// frames, innermost first.
var ourChain = []string{"f7", "f6", "f5", "f4", "f3", "f2", "f1", "main"}

func names(rec *recording, frames []Frame) []string {
	var out []string
	for i := range frames {
		out = append(out, rec.funcName(frames, i))
	}
	return out
}

func logFrames(t *testing.T, rec *recording, frames []Frame) {
	t.Helper()
	for i, fr := range frames {
		t.Logf("#%-2d pc=%#x cfa=%#x signal=%v method=%q %s", i, fr.PC, fr.CFA, fr.Signal, fr.Method, rec.funcName(frames, i))
	}
}

// checkOutermost checks that the walk ends at _start, whose CFI marks the
// return address undefined, after the program's main and glibc's start
// code, and that every frame before it says how its caller was found.
func checkOutermost(t *testing.T, rec *recording, frames []Frame, max int) {
	t.Helper()
	got := names(rec, frames)
	m := slices.Index(got, "main")
	if m < 0 {
		t.Fatalf("no main in %q", got)
	}
	tail := got[m+1:]
	if len(tail) < 2 || tail[len(tail)-1] != "_start" {
		t.Fatalf("frames after main = %q, want libc's start code then _start", tail)
	}
	for _, n := range tail[:len(tail)-1] {
		if !strings.HasPrefix(n, "libc.so.6:") {
			t.Errorf("frame %q between main and _start is not in libc", n)
		}
	}
	if len(frames) >= max {
		t.Errorf("walk used all %d frames; want it to stop at _start", max)
	}
	last := frames[len(frames)-1]
	if last.Method != "" || last.CFA == 0 {
		t.Errorf("_start frame = %+v, want a CFA and no method (return address undefined)", last)
	}
	for i, fr := range frames[:len(frames)-1] {
		if fr.Method == "" {
			t.Errorf("frame %d (%s) has no method", i, got[i])
		}
	}
}

// checkFrameRegs checks what each frame says of its registers: frame 0
// has those it was given; an outer frame its PC as rip and its callee's
// CFA as rsp, and no scratch register unless a signal interrupted it (the
// kernel saved them all).
func checkFrameRegs(t *testing.T, rec *recording, frames []Frame) {
	t.Helper()
	if len(frames) == 0 || frames[0].Valid != AllRegs || frames[0].Regs != rec.regs {
		t.Fatalf("frame 0 registers %#x valid %#x; want %#x, all valid", frames[0].Regs, frames[0].Valid, rec.regs)
	}
	for i := 1; i < len(frames); i++ {
		fr := frames[i]
		if !fr.Valid.Has(regRIP) || fr.Regs[regRIP] != fr.PC || !fr.Valid.Has(regRSP) || fr.Regs[regRSP] != frames[i-1].CFA {
			t.Errorf("frame %d (%s): rip %#x rsp %#x valid %#x; want its PC %#x and the CFA below it %#x",
				i, rec.funcName(frames, i), fr.Regs[regRIP], fr.Regs[regRSP], fr.Valid, fr.PC, frames[i-1].CFA)
		}
		switch {
		case fr.Signal:
			if fr.Valid != AllRegs || fr.Regs[regRIP] != rec.interruptIP || fr.Regs[regRSP] != rec.interruptSP {
				t.Errorf("interrupted frame %d: rip %#x rsp %#x valid %#x; want %#x %#x and every register",
					i, fr.Regs[regRIP], fr.Regs[regRSP], fr.Valid, rec.interruptIP, rec.interruptSP)
			}
		case fr.Valid&^(calleeSaved|1<<regRIP) != 0:
			t.Errorf("frame %d (%s): scratch registers %#x known", i, rec.funcName(frames, i), fr.Valid&^(calleeSaved|1<<regRIP))
		}
		for r := range uint64(numRegs) {
			if !fr.Valid.Has(r) && fr.Regs[r] != 0 {
				t.Errorf("frame %d: register %d unknown but %#x", i, r, fr.Regs[r])
			}
		}
	}
}

// checkCFAsRise checks that CFAs strictly increase, except across the
// signal trampoline at index tramp (-1 for none).
func checkCFAsRise(t *testing.T, frames []Frame, tramp int) {
	t.Helper()
	for i := 1; i < len(frames); i++ {
		if i == tramp || i == tramp+1 {
			continue
		}
		if frames[i].CFA <= frames[i-1].CFA {
			t.Errorf("frame %d CFA %#x <= frame %d CFA %#x", i, frames[i].CFA, i-1, frames[i-1].CFA)
		}
	}
}

func TestUnwindCall(t *testing.T) {
	for _, tc := range []struct {
		build  string
		method string // of our own frames
	}{
		{stackCFI, "cfi"},
		{stackNoHdr, "cfi"},
		{stackDebugFrame, "cfi"},
		{stackFP, "fp"},
	} {
		t.Run(tc.build, func(t *testing.T) {
			rec := record(t, tc.build, "call")
			const max = 64
			frames := New(rec).Unwind(rec.regs, rec, max)
			logFrames(t, rec, frames)
			got := names(rec, frames)
			want := append([]string{"dump"}, ourChain...)
			if len(got) < len(want) || !slices.Equal(got[:len(want)], want) {
				t.Fatalf("frames = %q, want them to begin %q", got, want)
			}
			if frames[0].PC != rec.regs[regRIP] {
				t.Errorf("frame 0 PC = %#x, want rip %#x", frames[0].PC, rec.regs[regRIP])
			}
			for i, fr := range frames[:len(want)] {
				if fr.Method != tc.method || fr.Signal {
					t.Errorf("frame %d (%s): method %q signal %v, want %q and no signal", i, got[i], fr.Method, fr.Signal, tc.method)
				}
			}
			checkOutermost(t, rec, frames, max)
			checkCFAsRise(t, frames, -1)
			checkFrameRegs(t, rec, frames)
			if tc.method == "fp" {
				for i, fr := range frames[1:len(want)] {
					if fr.Valid != 1<<regRBP|1<<regRSP|1<<regRIP {
						t.Errorf("frame %d (%s) found by its frame pointer knows %#x, want rbp, rsp, rip", i+1, got[i+1], fr.Valid)
					}
				}
			}
		})
	}
}

// TestUnwindCallCFA checks the CFAs of the CFI build against the stack
// itself: a frame's return address is stored just below its CFA.
func TestUnwindCallCFA(t *testing.T) {
	rec := record(t, stackCFI, "call")
	frames := New(rec).Unwind(rec.regs, rec, 64)
	for i := 0; i+1 < len(frames); i++ {
		var b [8]byte
		if err := rec.ReadMemory(frames[i].CFA-8, b[:]); err != nil {
			t.Fatalf("frame %d: reading below CFA %#x: %v", i, frames[i].CFA, err)
		}
		if ra := le64(b[:]); ra != frames[i+1].PC {
			t.Errorf("frame %d: [CFA-8] = %#x, want the next frame's PC %#x", i, ra, frames[i+1].PC)
		}
	}
}

func TestUnwindSignal(t *testing.T) {
	for _, tc := range []struct {
		build, mode string
		bytes       bool // recognise the trampoline by its code
	}{
		{stackCFI, "signal", true},
		{stackCFI, "signal", false},
		{stackCFI, "raise", true},
		{stackCFI, "raise", false},
		{stackCFI, "altstack", true},
		{stackCFI, "altstack", false},
		{stackNoHdr, "signal", true},
		{stackDebugFrame, "signal", true},
		{stackDebugFrame, "raise", false},
	} {
		name := tc.build + "/" + tc.mode
		if !tc.bytes {
			name += "/cfi-only"
		}
		t.Run(name, func(t *testing.T) {
			rec := record(t, tc.build, tc.mode)
			u := New(rec)
			u.noSigtrampBytes = !tc.bytes
			const max = 64
			frames := u.Unwind(rec.regs, rec, max)
			logFrames(t, rec, frames)
			got := names(rec, frames)
			if len(got) < 4 || got[0] != "dump" || got[1] != "handler" {
				t.Fatalf("frames = %q, want dump, handler, the trampoline, ...", got)
			}
			tramp := 2
			wantMethod := "sigframe"
			if !tc.bytes {
				wantMethod = "cfi"
			}
			if frames[tramp].Method != wantMethod || frames[tramp].Signal {
				t.Errorf("trampoline frame %+v: want method %q, no signal", frames[tramp], wantMethod)
			}
			if got[tramp] != "libc.so.6:?" {
				t.Errorf("trampoline frame in %s, want libc's __restore_rt (not in .dynsym)", got[tramp])
			}
			if frames[tramp].CFA != rec.interruptSP {
				t.Errorf("trampoline CFA = %#x, want the interrupted rsp %#x", frames[tramp].CFA, rec.interruptSP)
			}
			in := frames[tramp+1]
			if in.PC != rec.interruptIP || !in.Signal {
				t.Errorf("interrupted frame = %+v, want PC %#x (the handler's ucontext rip) and Signal", in, rec.interruptIP)
			}
			for i, fr := range frames {
				if fr.Signal != (i == tramp+1) {
					t.Errorf("frame %d Signal = %v", i, fr.Signal)
				}
			}
			// Below the interrupted code: spin and our chain, or for raise
			// libc's raise and then our chain.
			rest := got[tramp+1:]
			want := ourChain
			if tc.mode != "raise" {
				want = append([]string{"spin"}, ourChain...)
			} else {
				k := slices.Index(rest, "f7")
				if k < 1 {
					t.Fatalf("frames after the trampoline = %q, want libc's raise then f7", rest)
				}
				for _, n := range rest[:k] {
					if !strings.HasPrefix(n, "libc.so.6:") {
						t.Errorf("frame %q between the trampoline and f7 is not in libc", n)
					}
				}
				rest = rest[k:]
			}
			if len(rest) < len(want) || !slices.Equal(rest[:len(want)], want) {
				t.Fatalf("frames after the trampoline = %q, want them to begin %q", rest, want)
			}
			checkOutermost(t, rec, frames, max)
			checkCFAsRise(t, frames, tramp)
			checkFrameRegs(t, rec, frames)
			if tc.mode == "altstack" {
				h, s := rec.regionOf(frames[1].CFA), rec.regionOf(in.CFA)
				if h < 0 || s < 0 || h == s {
					t.Errorf("handler CFA %#x and interrupted CFA %#x should be on different recorded stacks", frames[1].CFA, in.CFA)
				}
				if frames[1].CFA < in.CFA {
					t.Logf("the signal stack could not be mapped above the main stack; the CFA did not move down")
				}
			}
		})
	}
}

func TestUnwindMax(t *testing.T) {
	rec := record(t, stackCFI, "call")
	u := New(rec)
	all := u.Unwind(rec.regs, rec, 64)
	for _, n := range []int{-1, 0, 1, 3, len(all) - 1, len(all), len(all) + 1} {
		got := u.Unwind(rec.regs, rec, n)
		want := all[:min(max(n, 0), len(all))]
		if !slices.Equal(got, want) {
			t.Errorf("max %d: got %d frames, want %d", n, len(got), len(want))
		}
	}
}

// TestUnwindConcurrent shares one Unwinder, its cache cold, between
// goroutines: every walk must see the same frames (run with -race).
func TestUnwindConcurrent(t *testing.T) {
	rec := record(t, stackCFI, "signal")
	want := New(rec).Unwind(rec.regs, rec, 64)
	u := New(rec)
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			for j := range 20 {
				n := 1 + (g*20+j)%len(want)
				if got := u.Unwind(rec.regs, rec, n); !slices.Equal(got, want[:n]) {
					t.Errorf("goroutine %d: %d frames differ", g, n)
					return
				}
			}
		})
	}
	wg.Wait()
}
