package tracer

import (
	"bytes"
	"debug/elf"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/memtrap/memtrap/internal/fixture"
	"github.com/memtrap/memtrap/pkg/x86/xsave"
	"golang.org/x/sys/cpu"
	"golang.org/x/sys/unix"
)

// vecPattern is byte i of vector register r in TestXState: distinct enough
// that a register or offset mix-up shows.
func vecPattern(r, i int) byte { return byte(uint32(r*64+i) * 2654435761 >> 24) }

// assemble runs GNU as over Intel-syntax src and returns the .text bytes.
func assemble(t *testing.T, src string) []byte {
	t.Helper()
	dir := t.TempDir()
	s, o := filepath.Join(dir, "x.s"), filepath.Join(dir, "x.o")
	if err := os.WriteFile(s, []byte(".intel_syntax noprefix\n"+src), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("as", "--64", "-o", o, s).CombinedOutput(); err != nil {
		t.Fatalf("as: %v\n%s", err, out)
	}
	f, err := elf.Open(o)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	b, err := f.Section(".text").Data()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestXState loads every vector register of a target with a known pattern
// (code assembled here and run in the target) and reads it back through
// both views.
func TestXState(t *testing.T) {
	prog := fixture.Build(t, "pkg/tracer/testdata/threads_exit.c", "-O0", "-pthread")
	nvec, width := 16, 16
	load := "movdqu xmm%d, [rax+%d]\n"
	switch {
	case cpu.X86.HasAVX512F:
		nvec, width, load = 32, 64, "vmovdqu64 zmm%d, [rax+%d]\n"
	case cpu.X86.HasAVX:
		width, load = 32, "vmovdqu ymm%d, [rax+%d]\n"
	}
	var src strings.Builder
	for r := range nvec {
		fmt.Fprintf(&src, load, r, r*64)
	}
	for i := range 8 {
		fmt.Fprintf(&src, "movq mm%d, [rax+%d]\n", i, 2048+8*i)
		if cpu.X86.HasAVX512BW {
			fmt.Fprintf(&src, "kmovq k%d, [rax+%d]\n", i, 2048+64+8*i)
		}
	}
	src.WriteString("int3\n")
	code := assemble(t, src.String())
	pattern := make([]byte, 4096)
	for i := range pattern {
		pattern[i] = vecPattern(i/64, i%64)
	}
	err := Locked(func() error {
		p, _ := launch(t, prog)
		defer p.Kill()
		th, err := p.RunToEntry()
		if err != nil {
			return err
		}
		base, err := th.Syscall(unix.SYS_MMAP, 0, 8192, unix.PROT_READ|unix.PROT_WRITE|unix.PROT_EXEC, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS, ^uintptr(0), 0)
		if err != nil {
			return err
		}
		data, text := uint64(base), uint64(base)+4096
		if err := p.WriteMemory(data, pattern); err != nil {
			return err
		}
		if err := p.WriteMemory(text, code); err != nil {
			return err
		}
		var regs unix.PtraceRegs
		if err := th.Regs(&regs); err != nil {
			return err
		}
		regs.Rip, regs.Rax = text, data
		if err := th.SetRegs(&regs); err != nil {
			return err
		}
		if err := th.Resume(0); err != nil {
			return err
		}
		st, err := p.Wait()
		if err != nil {
			return err
		}
		if st.Kind != StopSignal || st.Sig != int(unix.SIGTRAP) {
			return fmt.Errorf("loader stopped with %v signal %d", st.Kind, st.Sig)
		}

		var fx [512]byte
		if err := th.FPRegs(&fx); err != nil {
			return err
		}
		xs := make([]byte, xsave.Size())
		n, err := th.XState(xs)
		if err != nil {
			return err
		}
		if n < 576 {
			return fmt.Errorf("XState filled %d bytes", n)
		}
		xs = xs[:n]
		// The legacy areas agree (bytes 0-159: control words and x87/MMX,
		// 160-415: XMM).
		if !bytes.Equal(fx[:416], xs[:416]) {
			return fmt.Errorf("FXSAVE image and XSAVE legacy area differ")
		}
		for i := range 8 {
			if got, want := fx[xsave.MMOffset+16*i:][:8], pattern[2048+8*i:][:8]; !bytes.Equal(got, want) {
				t.Errorf("mm%d = % x, want % x", i, got, want)
			}
		}
		bv := leUint64(xs[xsave.BVOffset:])
		comp := func(c, off, n int) []byte {
			o, size, ok := xsave.Component(c)
			if !ok || off+n > size || o+off+n > len(xs) || bv&(1<<c) == 0 {
				t.Errorf("component %d: at %d size %d ok %v, image %d bytes, XSTATE_BV %#x", c, o, size, ok, len(xs), bv)
				return make([]byte, n)
			}
			return xs[o+off:][:n]
		}
		for r := range nvec {
			var got []byte
			switch {
			case r >= 16:
				got = comp(xsave.Hi16ZMM, 64*(r-16), 64)
			default:
				got = append([]byte(nil), fx[xsave.XMMOffset+16*r:][:16]...)
				if width >= 32 {
					got = append(got, comp(xsave.YMMHi128, 16*r, 16)...)
				}
				if width == 64 {
					got = append(got, comp(xsave.ZMMHi256, 32*r, 32)...)
				}
			}
			if want := pattern[64*r:][:width]; !bytes.Equal(got, want) {
				t.Errorf("vector register %d:\n got % x\nwant % x", r, got, want)
			}
		}
		if cpu.X86.HasAVX512BW {
			if got, want := comp(xsave.Opmask, 0, 64), pattern[2048+64:][:64]; !bytes.Equal(got, want) {
				t.Errorf("k0-k7 = % x, want % x", got, want)
			}
		}
		// A short buffer is filled as far as it goes.
		short := make([]byte, 600)
		if n, err := th.XState(short); err != nil || n != 600 || !bytes.Equal(short, xs[:600]) {
			t.Errorf("XState into 600 bytes: %d, %v", n, err)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// benchStopped runs f (which loops b.N times) on the ptrace thread, with
// a stopped thread of a fresh target.
func benchStopped(b *testing.B, f func(th *Thread) error) {
	prog := fixture.Build(b, "pkg/tracer/testdata/threads_exit.c", "-O0", "-pthread")
	err := Locked(func() error {
		p, err := Launch([]string{prog}, LaunchOptions{})
		if err != nil {
			return err
		}
		defer p.Kill()
		th, err := p.RunToEntry()
		if err != nil {
			return err
		}
		b.ResetTimer()
		return f(th)
	})
	if err != nil {
		b.Fatal(err)
	}
}

// BenchmarkFPRegs and BenchmarkXState: what reading vector registers adds
// to a trapped vector store (the emulator reads them for those only);
// BenchmarkGetRegs for scale.
func BenchmarkFPRegs(b *testing.B) {
	var fx [512]byte
	benchStopped(b, func(th *Thread) error {
		for range b.N {
			if err := th.FPRegs(&fx); err != nil {
				return err
			}
		}
		return nil
	})
}

func BenchmarkXState(b *testing.B) {
	end := xsave.Size()
	if off, size, ok := xsave.Component(xsave.Hi16ZMM); ok {
		end = off + size
	}
	xs := make([]byte, end)
	benchStopped(b, func(th *Thread) error {
		for range b.N {
			if _, err := th.XState(xs); err != nil {
				return err
			}
		}
		return nil
	})
}

func BenchmarkGetRegs(b *testing.B) {
	var regs unix.PtraceRegs
	benchStopped(b, func(th *Thread) error {
		for range b.N {
			if err := th.Regs(&regs); err != nil {
				return err
			}
		}
		return nil
	})
}
