package tracer

import (
	"fmt"
	"testing"

	"golang.org/x/sys/unix"
)

// ReadSegments reads what ReadMemory reads, in one call, and stops at the
// first range the target cannot read.
func TestReadSegments(t *testing.T) {
	err := Locked(func() error {
		p, addr, err := startDRWrite(t)
		if err != nil {
			return err
		}
		defer p.Close()
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
