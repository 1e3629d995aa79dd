package pagewatch

import (
	"testing"

	"golang.org/x/sys/unix"
)

// BenchmarkDecodeStore: the decoding every trapped write pays.
func BenchmarkDecodeStore(b *testing.B) {
	code := []byte{0x48, 0x89, 0x05, 0xe5, 0x2e, 0x00, 0x00} // mov [rip+0x2ee5], rax
	regs := unix.PtraceRegs{Rip: 0x401000, Rax: 42}
	for i := 0; i < b.N; i++ {
		if _, err := DecodeStore(code, &regs); err != nil {
			b.Fatal(err)
		}
	}
}
