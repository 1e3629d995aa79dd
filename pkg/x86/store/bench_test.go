package store

import (
	"testing"

	"golang.org/x/sys/unix"
)

// BenchmarkDecodeStore: the decoding every trapped write pays.
func BenchmarkDecodeStore(b *testing.B) {
	code := []byte{0x48, 0x89, 0x05, 0xe5, 0x2e, 0x00, 0x00} // mov [rip+0x2ee5], rax
	regs := unix.PtraceRegs{Rip: 0x401000, Rax: 42}
	for i := 0; i < b.N; i++ {
		if _, err := Decode(code, &regs); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkEmulateMov: what the fast path computes per trapped MOV, decode
// included, without the ptrace calls around it.
func BenchmarkEmulateMov(b *testing.B) {
	code := []byte{0x48, 0x89, 0x05, 0xe5, 0x2e, 0x00, 0x00} // mov [rip+0x2ee5], rax
	regs := unix.PtraceRegs{Rip: 0x401000, Rax: 42, Eflags: 0x246}
	fake := &fakeTarget{}
	for b.Loop() {
		s, err := Decode(code, &regs)
		if err != nil {
			b.Fatal(err)
		}
		if _, why := Emulate(&s, &regs, fake); why != "" {
			b.Fatal(why)
		}
	}
}

// BenchmarkEmulateAdd: the same for a read-modify-write with flags.
func BenchmarkEmulateAdd(b *testing.B) {
	code := []byte{0x48, 0x01, 0x05, 0xe5, 0x2e, 0x00, 0x00} // add [rip+0x2ee5], rax
	regs := unix.PtraceRegs{Rip: 0x401000, Rax: 42, Eflags: 0x246}
	fake := &fakeTarget{}
	for b.Loop() {
		s, _ := Decode(code, &regs)
		if _, why := Emulate(&s, &regs, fake); why != "" {
			b.Fatal(why)
		}
	}
}
