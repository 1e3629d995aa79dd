package store

import (
	"encoding/hex"
	"errors"
	"reflect"
	"strings"
	"testing"

	"golang.org/x/arch/x86/x86asm"
	"golang.org/x/sys/unix"
)

// Register values chosen so that every register, and every truncation of
// one, is distinguishable in an address.
const (
	tRAX    = 0xdead00001000
	tRBX    = 0xbeef00010000
	tRCX    = 3
	tRSI    = 0x7f0000030000
	tRDI    = 0x7f0000020000
	tRBP    = 0x7ffc00002000
	tRSP    = 0x7ffc00001000
	tR12    = 0x10
	tRIP    = 0x401000
	tFSBase = 0x7f0010000000
	tGSBase = 0x7f0020000000
	dfFlag  = 1 << 10
)

func testRegs() unix.PtraceRegs {
	return unix.PtraceRegs{
		Rax: tRAX, Rbx: tRBX, Rcx: tRCX, Rdx: 0x44, Rsi: tRSI, Rdi: tRDI,
		Rbp: tRBP, Rsp: tRSP, R8: 0x88, R12: tR12, Rip: tRIP,
		Eflags: 0x246, Fs_base: tFSBase, Gs_base: tGSBase,
	}
}

func mustHex(t testing.TB, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(strings.ReplaceAll(s, " ", ""))
	if err != nil {
		t.Fatalf("bad hex %q: %v", s, err)
	}
	return b
}

type storeCase struct {
	name  string
	code  string // hex; bytes from GNU as 2.40 unless noted
	regs  func(*unix.PtraceRegs)
	addr  uint64
	size  uint64
	known bool
	len   int
	rep   bool
}

func withRCX(v uint64) func(*unix.PtraceRegs) { return func(r *unix.PtraceRegs) { r.Rcx = v } }
func withDF(rcx uint64) func(*unix.PtraceRegs) {
	return func(r *unix.PtraceRegs) { r.Rcx, r.Eflags = rcx, r.Eflags|dfFlag }
}

var storeCases = []storeCase{
	// Addressing.
	{name: "mov [rip+0x2ee5], rax", code: "48 89 05 e5 2e 00 00", addr: tRIP + 7 + 0x2ee5, size: 8, known: true, len: 7},
	{name: "mov [rbp-8], rax", code: "48 89 45 f8", addr: tRBP - 8, size: 8, known: true, len: 4},
	{name: "mov [rbx+rcx*4-0x100], edx", code: "89 94 8b 00 ff ff ff", addr: tRBX + tRCX*4 - 0x100, size: 4, known: true, len: 7},
	{name: "mov [rbx+r12*8+0x7fffffff], r8d", code: "46 89 84 e3 ff ff ff 7f", addr: tRBX + tR12*8 + 0x7fffffff, size: 4, known: true, len: 8},
	{name: "mov fs:[0x10], eax", code: "64 89 04 25 10 00 00 00", addr: tFSBase + 0x10, size: 4, known: true, len: 8},
	{name: "mov gs:[rax+8], rax", code: "65 48 89 40 08", addr: tGSBase + tRAX + 8, size: 8, known: true, len: 5},
	{name: "ds: is ignored in 64-bit mode", code: "3e 89 07", addr: tRDI, size: 4, known: true, len: 3},
	{name: "addr32 mov [eax+ebx*2+0x10], 1", code: "67 c7 44 58 10 01 00 00 00", addr: 0x1000 + 0x10000*2 + 0x10, size: 4, known: true, len: 9},
	{name: "addr32 wraps at 4G", code: "67 c7 40 e0 01 00 00 00", regs: func(r *unix.PtraceRegs) { r.Rax = 0xdead00000010 }, addr: 0xfffffff0, size: 4, known: true, len: 8},
	{name: "addr32 mov [eip+0x10], 1", code: "67 c7 05 10 00 00 00 01 00 00 00", regs: func(r *unix.PtraceRegs) { r.Rip = 0x100001000 }, addr: 0x1000 + 11 + 0x10, size: 4, known: true, len: 11},
	{name: "mov [rax], ah", code: "88 20", addr: tRAX, size: 1, known: true, len: 2},
	{name: "mov [r12], spl", code: "41 88 24 24", addr: tR12, size: 1, known: true, len: 4},
	{name: "movabs [0x1122334455667788], rax", code: "48 a3 88 77 66 55 44 33 22 11", addr: 0x1122334455667788, size: 8, known: true, len: 10},
	{name: "moffs is not sign-extended", code: "a2 00 00 00 80 00 00 00 00", addr: 0x80000000, size: 1, known: true, len: 9},
	{name: "movabs rax, [moffs] reads", code: "48 a1 88 77 66 55 44 33 22 11", known: true, len: 10},

	// Immediate stores of each width.
	{name: "mov byte [rdi], 1", code: "c6 07 01", addr: tRDI, size: 1, known: true, len: 3},
	{name: "mov word [rdi], 1", code: "66 c7 07 01 00", addr: tRDI, size: 2, known: true, len: 5},
	{name: "mov dword [rdi], 1", code: "c7 07 01 00 00 00", addr: tRDI, size: 4, known: true, len: 6},
	{name: "mov qword [rdi], -1", code: "48 c7 07 ff ff ff ff", addr: tRDI, size: 8, known: true, len: 7},

	// VEX and EVEX.
	{name: "vmovdqu [rdi], ymm0", code: "c5 fe 7f 07", addr: tRDI, size: 32, known: true, len: 4},
	{name: "vmovdqu [rip+0x100], ymm3", code: "c5 fe 7f 1d 00 01 00 00", addr: tRIP + 8 + 0x100, size: 32, known: true, len: 8},
	{name: "vmovdqu64 [rdi+0x40], zmm1", code: "62 f1 fe 48 7f 4f 01", addr: tRDI + 0x40, size: 64, known: true, len: 7},
	{name: "vmovdqu64 [rdi-0x40], zmm1", code: "62 f1 fe 48 7f 4f ff", addr: tRDI - 0x40, size: 64, known: true, len: 7},
	{name: "vmovdqu64 [rdi+0x40]{k1}, zmm1", code: "62 f1 fe 49 7f 4f 01", addr: tRDI + 0x40, size: 64, known: false, len: 7},
	{name: "vmovups [rip-0x40], zmm2", code: "62 f1 7c 48 11 15 c0 ff ff ff", addr: tRIP + 10 - 0x40, size: 64, known: true, len: 10},
	{name: "vmovd [rdi+4], xmm0", code: "c5 f9 7e 47 04", addr: tRDI + 4, size: 4, known: true, len: 5},
	{name: "vextracti128 [rdi], ymm0, 1", code: "c4 e3 7d 39 07 01", addr: tRDI, size: 16, known: true, len: 6},
	{name: "kmovw [rdi], k1", code: "c5 f8 91 0f", addr: tRDI, size: 2, known: true, len: 4},
	{name: "vpmovqb [rdi], zmm0", code: "62 f2 7e 48 32 07", addr: tRDI, size: 8, known: true, len: 6},
	{name: "vpmovqb [rdi+2], xmm0 (disp8*2)", code: "62 f2 7e 08 32 47 01", addr: tRDI + 2, size: 2, known: true, len: 7},
	{name: "vmaskmovps [rdi], ymm1, ymm0", code: "c4 e2 75 2e 07", addr: tRDI, size: 32, known: false, len: 5},
	{name: "vmaskmovps ymm0, ymm1, [rdi] reads", code: "c4 e2 75 2c 07", known: true, len: 5},
	{name: "vpscatterdd [rax+zmm1*4]{k1}, zmm2", code: "62 f2 7d 49 a0 14 88", known: false, len: 7},
	{name: "vzeroupper then nop", code: "c5 f8 77 90 90 90", known: true, len: 3},

	// String ops.
	{name: "rep stosb", code: "f3 aa", addr: tRDI, size: tRCX, known: true, len: 2, rep: true},
	{name: "rep stosb DF=1", code: "f3 aa", regs: withDF(tRCX), addr: tRDI - (tRCX - 1), size: tRCX, known: true, len: 2, rep: true},
	{name: "rep movsq", code: "f3 48 a5", addr: tRDI, size: 8 * tRCX, known: true, len: 3, rep: true},
	{name: "rep movsq DF=1", code: "f3 48 a5", regs: withDF(tRCX), addr: tRDI - 8*(tRCX-1), size: 8 * tRCX, known: true, len: 3, rep: true},
	{name: "rep stosb RCX=0", code: "f3 aa", regs: withRCX(0), addr: tRDI, known: true, len: 2, rep: true},
	{name: "rep stosq 1<<40 times", code: "f3 48 ab", regs: withRCX(1 << 40), addr: tRDI, size: 8 << 40, known: true, len: 3, rep: true},
	{name: "rep stosq RCX too big", code: "f3 48 ab", regs: withRCX(1 << 62), addr: tRDI, known: false, len: 3, rep: true},
	{name: "rep stosb DF=1 below 0", code: "f3 aa", regs: func(r *unix.PtraceRegs) { r.Rdi, r.Rcx, r.Eflags = 0x10, 0x100, r.Eflags|dfFlag }, known: false, len: 2, rep: true},
	{name: "repne stosb", code: "f2 aa", addr: tRDI, size: tRCX, known: true, len: 2, rep: true},
	{name: "addr32 rep stosd uses EDI, ECX", code: "67 f3 ab", regs: withRCX(0x100000002), addr: tRDI & 0xffffffff, size: 8, known: true, len: 3, rep: true},
	{name: "stosq", code: "48 ab", addr: tRDI, size: 8, known: true, len: 2},
	{name: "stosq DF=1", code: "48 ab", regs: withDF(tRCX), addr: tRDI, size: 8, known: true, len: 2},
	{name: "stosd", code: "ab", addr: tRDI, size: 4, known: true, len: 1},
	{name: "movsb", code: "a4", addr: tRDI, size: 1, known: true, len: 1},
	{name: "rep lodsb", code: "f3 ac", known: true, len: 2, rep: true},
	{name: "repe cmpsb", code: "f3 a6", known: true, len: 2, rep: true},

	// Stack.
	{name: "push rax", code: "50", addr: tRSP - 8, size: 8, known: true, len: 1},
	{name: "push [rsp+8]", code: "ff 74 24 08", addr: tRSP - 8, size: 8, known: true, len: 4},
	{name: "push 5", code: "6a 05", addr: tRSP - 8, size: 8, known: true, len: 2},
	{name: "pushw 5", code: "66 6a 05", addr: tRSP - 2, size: 2, known: true, len: 3},
	{name: "pushfq", code: "9c", addr: tRSP - 8, size: 8, known: true, len: 1},
	{name: "pushfw", code: "66 9c", addr: tRSP - 2, size: 2, known: true, len: 2},
	{name: "push fs", code: "0f a0", addr: tRSP - 8, size: 8, known: false, len: 2},
	{name: "call rel32", code: "e8 00 00 00 00", addr: tRSP - 8, size: 8, known: true, len: 5},
	{name: "call [rax]", code: "ff 10", addr: tRSP - 8, size: 8, known: true, len: 2},
	{name: "data16 call (vendor-dependent)", code: "66 e8 00 00 00 00", addr: tRSP - 8, size: 8, known: false, len: 6},
	{name: "pop [rsp+8]", code: "8f 44 24 08", addr: tRSP + 8 + 8, size: 8, known: true, len: 4},
	{name: "pop [rax]", code: "8f 00", addr: tRAX, size: 8, known: true, len: 2},
	{name: "pop word [rax]", code: "66 8f 00", addr: tRAX, size: 2, known: true, len: 3},
	{name: "pop rax", code: "58", known: true, len: 1},
	{name: "enter 16, 0", code: "c8 10 00 00", addr: tRSP - 8, size: 8, known: true, len: 4},
	{name: "enter 16, 3", code: "c8 10 00 03", addr: tRSP - 32, size: 32, known: true, len: 4},
	{name: "far call", code: "48 ff 1f", known: false, len: 3},

	// Read-modify-write.
	{name: "lock xadd [rdi], eax", code: "f0 0f c1 07", addr: tRDI, size: 4, known: true, len: 4},
	{name: "lock cmpxchg [rdi], rcx", code: "f0 48 0f b1 0f", addr: tRDI, size: 8, known: true, len: 5},
	{name: "cmpxchg16b [rdi]", code: "48 0f c7 0f", addr: tRDI, size: 16, known: true, len: 4},
	{name: "inc qword [rdi]", code: "48 ff 07", addr: tRDI, size: 8, known: true, len: 3},
	{name: "xchg [rdi], rax", code: "48 87 07", addr: tRDI, size: 8, known: true, len: 3},
	{name: "shld [rdi], rax, 3", code: "48 0f a4 07 03", addr: tRDI, size: 8, known: true, len: 5},
	{name: "not byte [rdi]", code: "f6 17", addr: tRDI, size: 1, known: true, len: 2},
	{name: "sete [rdi+3]", code: "0f 94 47 03", addr: tRDI + 3, size: 1, known: true, len: 4},
	{name: "bts dword [rdi], 37", code: "0f ba 2f 25", addr: tRDI, size: 4, known: true, len: 4},
	{name: "bts [rdi], rax (100)", code: "48 0f ab 07", regs: func(r *unix.PtraceRegs) { r.Rax = 100 }, addr: tRDI + 8, size: 8, known: true, len: 4},
	{name: "bts [rdi], rax (-1)", code: "48 0f ab 07", regs: func(r *unix.PtraceRegs) { r.Rax = ^uint64(0) }, addr: tRDI - 8, size: 8, known: true, len: 4},
	{name: "bts [rdi], eax (-33)", code: "0f ab 07", regs: func(r *unix.PtraceRegs) { r.Rax = 0xffffffffffffffdf }, addr: tRDI - 8, size: 4, known: true, len: 3},
	{name: "bts [rdi], eax ignores RAX's top", code: "0f ab 07", regs: func(r *unix.PtraceRegs) { r.Rax = 0x100000040 }, addr: tRDI + 8, size: 4, known: true, len: 3},
	{name: "btr word [rdi], cx (-1)", code: "66 0f b3 0f", regs: withRCX(0xffff), addr: tRDI - 2, size: 2, known: true, len: 4},
	{name: "lock mov is #UD", code: "f0 89 07", known: false, len: 3},

	// Other stores.
	{name: "fstp tbyte [rdi]", code: "db 3f", addr: tRDI, size: 10, known: true, len: 2},
	{name: "fnsave [rdi]", code: "dd 37", addr: tRDI, size: 108, known: true, len: 2},
	{name: "fxsave [rdi]", code: "0f ae 07", addr: tRDI, size: 512, known: true, len: 3},
	{name: "xsave [rdi]", code: "0f ae 27", known: false, len: 3},
	{name: "stmxcsr [rdi]", code: "0f ae 1f", addr: tRDI, size: 4, known: true, len: 3},
	{name: "movaps [rdi], xmm0", code: "0f 29 07", addr: tRDI, size: 16, known: true, len: 3},
	{name: "movsd [rdi], xmm0", code: "f2 0f 11 07", addr: tRDI, size: 8, known: true, len: 4},
	{name: "pextrb [rdi], xmm0, 1", code: "66 0f 3a 14 07 01", addr: tRDI, size: 1, known: true, len: 6},
	{name: "maskmovdqu xmm0, xmm1", code: "66 0f f7 c1", known: false, len: 4},

	// Reads only.
	{name: "add rax, [rdi]", code: "48 03 07", known: true, len: 3},
	{name: "cmp [rdi], rax", code: "48 39 07", known: true, len: 3},
	{name: "mov rax, [rdi]", code: "48 8b 07", known: true, len: 3},
	{name: "bt [rdi], rax", code: "48 0f a3 07", known: true, len: 4},
	{name: "lea rax, [rdi]", code: "48 8d 07", known: true, len: 3},
	{name: "nop", code: "90", known: true, len: 1},
}

func TestDecodeStore(t *testing.T) {
	for _, c := range storeCases {
		t.Run(c.name, func(t *testing.T) {
			regs := testRegs()
			if c.regs != nil {
				c.regs(&regs)
			}
			code := mustHex(t, c.code)
			s, err := Decode(code, &regs)
			if err != nil {
				t.Fatalf("% x: %v", code, err)
			}
			if s.Len != c.len || s.Known != c.known || s.Rep != c.rep || s.Size != c.size || (s.Size != 0 && s.Addr != c.addr) {
				t.Errorf("% x (%v): got Addr %#x Size %d Known %v Len %d Rep %v; want Addr %#x Size %d Known %v Len %d Rep %v",
					code, s.Inst, s.Addr, s.Size, s.Known, s.Len, s.Rep, c.addr, c.size, c.known, c.len, c.rep)
			}
			if s.Inst.Op == 0 || s.Inst.Len != s.Len {
				t.Errorf("Inst %v, Len %d", s.Inst, s.Inst.Len)
			}
		})
	}
}

func TestDecodeStoreErrors(t *testing.T) {
	for _, c := range []struct {
		name      string
		code      string
		truncated bool
	}{
		{name: "empty", code: "", truncated: true},
		{name: "undefined 0F 04", code: "0f 04"},
		{name: "push es is invalid in 64-bit mode", code: "06"},
		// x86asm returns Op 0 with a nil error here.
		{name: "prefix then undefined opcode", code: "66 0f 04"},
		{name: "truncated mov", code: "48 89 05 e5 2e", truncated: true},
		// x86asm decodes these as register forms with a nil error.
		{name: "VEX without ModRM", code: "c5 fe 7f", truncated: true},
		{name: "EVEX without ModRM", code: "62 f1 fe 48 7f", truncated: true},
		{name: "EVEX without disp8", code: "62 f1 fe 48 7f 4f", truncated: true},
		{name: "prefix only", code: "f3", truncated: true},
	} {
		t.Run(c.name, func(t *testing.T) {
			regs := testRegs()
			s, err := Decode(mustHex(t, c.code), &regs)
			if err == nil || !errors.Is(err, ErrUndecodable) {
				t.Fatalf("got %+v, %v; want ErrUndecodable", s, err)
			}
			if got := errors.Is(err, x86asm.ErrTruncated); got != c.truncated {
				t.Errorf("errors.Is(%v, ErrTruncated) = %v, want %v", err, got, c.truncated)
			}
			if s.Known || s.Len != 0 || s.Size != 0 {
				t.Errorf("got %+v with error", s)
			}
		})
	}
}

// TestDecodeStoreCodeLonger checks that bytes past the instruction, up to
// and beyond 15 (the watch reads 16), change nothing.
func TestDecodeStoreCodeLonger(t *testing.T) {
	for _, c := range storeCases {
		regs := testRegs()
		if c.regs != nil {
			c.regs(&regs)
		}
		code := mustHex(t, c.code)
		want, err := Decode(code, &regs)
		if err != nil {
			t.Fatal(err)
		}
		for _, fill := range []byte{0x00, 0x90, 0xff} {
			long := append(code[:want.Len:want.Len], make([]byte, 16-want.Len)...)
			for i := want.Len; i < len(long); i++ {
				long[i] = fill
			}
			got, err := Decode(long, &regs)
			if err != nil || got.Len != want.Len || got.Addr != want.Addr || got.Size != want.Size || got.Known != want.Known || got.Rep != want.Rep {
				t.Errorf("%s followed by %#x: got %+v, %v; want %+v", c.name, fill, got, err, want)
			}
		}
	}
}

func TestRegValue(t *testing.T) {
	regs := unix.PtraceRegs{
		Rax: 0x1122334455667788, Rcx: 0x8877665544332211, Rsp: 0x7ffc0000abcd, Rdi: 0xfedcba9876543210,
		R8: 0xa1a2a3a4a5a6a7a8, R15: 0xf1f2f3f4f5f6f7f8,
	}
	for _, c := range []struct {
		r    x86asm.Reg
		want uint64
	}{
		{x86asm.RAX, 0x1122334455667788}, {x86asm.EAX, 0x55667788}, {x86asm.AX, 0x7788},
		{x86asm.AL, 0x88}, {x86asm.AH, 0x77}, {x86asm.CH, 0x22}, {x86asm.CL, 0x11},
		{x86asm.SPB, 0xcd}, {x86asm.DIB, 0x10}, {x86asm.ESP, 0x0000abcd}, {x86asm.RSP, 0x7ffc0000abcd},
		{x86asm.R8, 0xa1a2a3a4a5a6a7a8}, {x86asm.R8L, 0xa5a6a7a8}, {x86asm.R8W, 0xa7a8}, {x86asm.R8B, 0xa8},
		{x86asm.R15, 0xf1f2f3f4f5f6f7f8}, {x86asm.R15L, 0xf5f6f7f8}, {x86asm.R15W, 0xf7f8}, {x86asm.R15B, 0xf8},
		{x86asm.EDI, 0x76543210},
	} {
		if got, ok := regValue(c.r, &regs); !ok || got != c.want {
			t.Errorf("regValue(%v) = %#x, %v; want %#x", c.r, got, ok, c.want)
		}
	}
	for _, r := range []x86asm.Reg{x86asm.X0, x86asm.Z1, x86asm.RIP, x86asm.FS, x86asm.K1, 0} {
		if _, ok := regValue(r, &regs); ok {
			t.Errorf("regValue(%v) ok", r)
		}
	}
}

func TestWritesMemory(t *testing.T) {
	for op, want := range map[x86asm.Op]bool{
		x86asm.MOV: true, x86asm.ADD: true, x86asm.XCHG: true, x86asm.CMPXCHG16B: true, x86asm.SETNE: true,
		x86asm.BTS: true, x86asm.PUSH: true, x86asm.CALL: true, x86asm.POP: true, x86asm.STOSB: true,
		x86asm.MOVSQ: true, x86asm.FXSAVE: true, x86asm.XSAVE: true, x86asm.VMOVDQU64: true,
		x86asm.VPSCATTERDD: true, x86asm.MASKMOVDQU: true, x86asm.VMASKMOVPS: true, x86asm.ENTER: true,
		x86asm.CMP: false, x86asm.TEST: false, x86asm.BT: false, x86asm.LODSB: false, x86asm.CMPSB: false,
		x86asm.SCASQ: false, x86asm.LEA: false, x86asm.RET: false, x86asm.JMP: false, x86asm.NOP: false,
		x86asm.VGATHERPF0DPS: false, x86asm.VPADDD: false, x86asm.CLFLUSH: false,
	} {
		if got := WritesMemory(op); got != want {
			t.Errorf("WritesMemory(%v) = %v, want %v", op, got, want)
		}
	}
}

// forEachEncoding calls fn with (nearly) every opcode of the legacy, VEX and
// EVEX maps, under the prefixes that select between ops, with a memory
// ModRM for every /digit.
func forEachEncoding(fn func(code []byte)) {
	var buf [maxInstLen]byte
	emit := func(parts ...[]byte) {
		clear(buf[:])
		n := 0
		for _, p := range parts {
			n += copy(buf[n:], p)
		}
		fn(buf[:])
	}
	modrms := func(f func(m []byte)) {
		for reg := range 8 {
			f([]byte{byte(reg<<3 | 7)})          // [rdi]
			f([]byte{byte(reg<<3 | 4), 0x27, 0}) // [rdi] by SIB
		}
	}
	for _, p := range [][]byte{{}, {0x66}, {0xF2}, {0xF3}, {0x48}, {0x66, 0x48}, {0xF2, 0x48}, {0xF3, 0x48}, {0x67}} {
		for op := range 256 {
			modrms(func(m []byte) {
				emit(p, []byte{byte(op)}, m)
				emit(p, []byte{0x0F, byte(op)}, m)
				emit(p, []byte{0x0F, 0x38, byte(op)}, m)
				emit(p, []byte{0x0F, 0x3A, byte(op)}, m)
			})
		}
	}
	for mmap := 1; mmap <= 3; mmap++ {
		for w := range 2 {
			for pp := range 4 {
				for op := range 256 {
					modrms(func(m []byte) {
						for l := range 2 {
							emit([]byte{0xC4, byte(0xE0 | mmap), byte(w<<7 | 0x78 | l<<2 | pp), byte(op)}, m)
						}
						for l := range 3 {
							for aaa := range 2 {
								emit([]byte{0x62, byte(0xF0 | mmap), byte(w<<7 | 0x7C | pp), byte(l<<5 | 8 | aaa), byte(op)}, m)
							}
						}
					})
				}
			}
		}
	}
}

// TestMemoryFirstOpsClassified guards the write table against ops we have
// not reviewed: every op x86asm decodes with a memory first operand (the
// destination, in Intel order) must be in it, and every Known store must
// have a plausible size.
func TestMemoryFirstOpsClassified(t *testing.T) {
	// x86asm decodes F3 0F AE /2 and /3 with a memory operand as
	// WRFSBASE/WRGSBASE, which take only a register: left unknown.
	unreviewed := map[x86asm.Op]bool{x86asm.WRFSBASE: true, x86asm.WRGSBASE: true}
	regs := testRegs()
	seen := map[x86asm.Op]bool{}
	n := 0
	forEachEncoding(func(code []byte) {
		inst, err := x86asm.Decode(code, 64)
		if err != nil || inst.Op == 0 {
			return
		}
		n++
		_, memFirst := inst.Args[0].(x86asm.Mem)
		if memFirst && kindOf(inst.Op) == kindOther && !unreviewed[inst.Op] && !seen[inst.Op] {
			seen[inst.Op] = true
			t.Errorf("% x: %v has a memory destination but is not in the write table", code[:inst.Len], inst)
		}
		s, err := Decode(code, &regs)
		if err != nil {
			t.Errorf("% x: %v", code, err)
			return
		}
		if s.Known && s.Size > 512 && !s.Rep {
			t.Errorf("% x: %v: Size %d", code[:s.Len], inst, s.Size)
		}
		if memFirst && kindOf(inst.Op) == kindDest && !s.Known && !evexMasked(&inst) && !evexKMOV(&inst) && !hasInvalidPrefix(&inst) {
			t.Errorf("% x: %v: store of unknown size", code[:s.Len], inst)
		}
	})
	if n < 100000 {
		t.Errorf("only %d encodings decoded", n)
	}
}

func hasInvalidPrefix(inst *x86asm.Inst) bool {
	for _, p := range inst.Prefix {
		if p&x86asm.PrefixInvalid != 0 {
			return true
		}
	}
	return false
}

// TestDecodePrefixedVEX: VEX/EVEX stores behind FS, GS and address-size
// prefixes (x86asm alone gives up on them) decode to the right address.
func TestDecodePrefixedVEX(t *testing.T) {
	var regs unix.PtraceRegs
	regs.Rax, regs.Rdi = 0x1_0000_1000, 0x2000
	regs.Fs_base, regs.Gs_base = 0x7f00_0000_0000, 0x7e00_0000_0000
	for _, c := range []struct {
		code string
		addr uint64
		size uint64
		n    int
	}{
		{"64 c5 fe 7f 00", 0x7f00_0000_0000 + 0x1_0000_1000, 32, 5}, // vmovdqu fs:[rax], ymm0
		{"65 c5 f8 11 07", 0x7e00_0000_0000 + 0x2000, 16, 5},        // vmovups gs:[rdi], xmm0
		{"67 c5 fe 7f 00", 0x1000, 32, 5},                           // vmovdqu [eax], ymm0
		{"64 67 c5 fe 7f 00", 0x7f00_0000_0000 + 0x1000, 32, 6},     // both
	} {
		s, err := Decode(mustHex(t, c.code), &regs)
		if err != nil {
			t.Errorf("%s: %v", c.code, err)
			continue
		}
		if !s.Known || s.Addr != c.addr || s.Size != c.size || s.Len != c.n {
			t.Errorf("%s (%v): addr %#x size %d len %d known %v; want %#x %d %d", c.code, s.Inst, s.Addr, s.Size, s.Len, s.Known, c.addr, c.size, c.n)
		}
	}
	s, err := Decode(mustHex(t, "64 62 e1 fe 48 7f 0f"), &regs) // vmovdqu64 fs:[rdi], zmm17
	if err != nil || s.Addr != 0x7f00_0000_2000 || s.Size != 64 || s.Len != 7 {
		t.Errorf("EVEX behind FS: %+v %v", s, err)
	}
}

// A Cache decodes as Decode does, the first time and from the cache, with
// the address worked out from each call's registers.
func TestCache(t *testing.T) {
	var c Cache
	for round := 0; round < 2; round++ {
		for _, sc := range storeCases {
			for _, shift := range []uint64{0, 0x1000} {
				regs := testRegs()
				if sc.regs != nil {
					sc.regs(&regs)
				}
				regs.Rax += shift
				regs.Rdi += shift
				regs.Rsp += shift
				code := mustHex(t, sc.code)
				want, werr := Decode(code, &regs)
				got, gerr := c.Decode(code, &regs)
				if (werr == nil) != (gerr == nil) || !reflect.DeepEqual(got, want) {
					t.Fatalf("round %d, % x: cache %+v %v, Decode %+v %v", round, code, got, gerr, want, werr)
				}
			}
		}
	}
	if _, err := c.Decode([]byte{0x0f, 0xff}, &unix.PtraceRegs{}); err == nil {
		t.Errorf("undecodable bytes decoded through the cache")
	}
}
