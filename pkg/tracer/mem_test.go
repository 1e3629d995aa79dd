package tracer

import (
	"bufio"
	"fmt"
	"testing"

	"github.com/memtrap/memtrap/internal/fixture"
	"golang.org/x/sys/unix"
)

// ReadSegments reads what ReadMemory reads, in one call, and stops at the
// first range the target cannot read.
func TestReadSegments(t *testing.T) {
	prog := fixture.Build(t, "pkg/tracer/testdata/drwrite.c", "-O1")
	err := Locked(func() error {
		p, out := launch(t, prog)
		defer p.Close()
		if _, err := p.RunToEntry(); err != nil {
			return err
		}
		if err := p.ResumeAll(); err != nil {
			return err
		}
		var addr uint64
		if _, err := fmt.Fscanf(bufio.NewReader(out), "0x%x\n", &addr); err != nil {
			return err
		}
		st, err := p.Wait()
		if err != nil || st.Kind != StopSignal || st.Sig != int(unix.SIGTRAP) {
			return fmt.Errorf("stop %+v, %v; want the int3", st, err)
		}
		var regs unix.PtraceRegs
		if err := st.Thread.Regs(&regs); err != nil {
			return err
		}
		wantVar, wantCode := make([]byte, 8), make([]byte, 16)
		if err := p.ReadMemory(addr, wantVar); err != nil {
			return err
		}
		if err := p.ReadMemory(regs.Rip, wantCode); err != nil {
			return err
		}
		gotVar, gotCode, zero := make([]byte, 8), make([]byte, 16), make([]byte, 8)
		n, err := p.ReadSegments([]Segment{{addr, gotVar}, {regs.Rip, gotCode}})
		if err != nil || n != 24 || string(gotVar) != string(wantVar) || string(gotCode) != string(wantCode) {
			return fmt.Errorf("ReadSegments: %d, %v: % x / % x, want % x / % x", n, err, gotVar, gotCode, wantVar, wantCode)
		}
		if n, err := p.ReadSegments([]Segment{{addr, gotVar}, {0, zero}}); n != 8 {
			return fmt.Errorf("ReadSegments with page 0 second: %d, %v; want the first 8 bytes", n, err)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}
