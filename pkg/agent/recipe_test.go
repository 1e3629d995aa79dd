package agent

import (
	"bytes"
	"debug/elf"
	"encoding/binary"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/memtrap/memtrap/internal/fixture"
	"golang.org/x/arch/x86/x86asm"
)

// TestRecipeFor: the recipes of plain MOVs to memory, and no recipe for
// what the agent cannot complete.
func TestRecipeFor(t *testing.T) {
	const pc = 0x401000
	cases := []struct {
		name string
		code []byte
		want *Recipe // nil: not the agent's
	}{
		{"mov [rdi],rsi", []byte{0x48, 0x89, 0x37}, &Recipe{Len: 3, Width: 8, Src: SrcReg, Reg: 9, Base: 8, Index: NoReg, Scale: 1}},
		{"mov [rdi+rsi*4+8],edx", []byte{0x89, 0x54, 0xb7, 0x08}, &Recipe{Len: 4, Width: 4, Src: SrcReg, Reg: 12, Base: 8, Index: 9, Scale: 4, Disp: 8}},
		{"mov byte [rdi+100],0x5a", []byte{0xc6, 0x47, 0x64, 0x5a}, &Recipe{Len: 4, Width: 1, Src: SrcImm, Imm: 0x5a, Base: 8, Index: NoReg, Scale: 1, Disp: 100}},
		{"mov [rip+0x1234],rsi", []byte{0x48, 0x89, 0x35, 0x34, 0x12, 0, 0}, &Recipe{Len: 7, Width: 8, Src: SrcReg, Reg: 9, Base: RIPRel, Index: NoReg, Scale: 1, Disp: 0x1234}},
		{"mov qword [rdi],-1", []byte{0x48, 0xc7, 0x07, 0xff, 0xff, 0xff, 0xff}, &Recipe{Len: 7, Width: 8, Src: SrcImm, Imm: ^uint64(0), Base: 8, Index: NoReg, Scale: 1}},
		{"mov [rdi],ax", []byte{0x66, 0x89, 0x07}, &Recipe{Len: 3, Width: 2, Src: SrcReg, Reg: 13, Base: 8, Index: NoReg, Scale: 1}},
		{"mov [r15],al", []byte{0x41, 0x88, 0x07}, &Recipe{Len: 3, Width: 1, Src: SrcReg, Reg: 13, Base: 7, Index: NoReg, Scale: 1}},
		{"mov [rdi],sil", []byte{0x40, 0x88, 0x37}, &Recipe{Len: 3, Width: 1, Src: SrcReg, Reg: 9, Base: 8, Index: NoReg, Scale: 1}},
		{"mov [rsp],rax", []byte{0x48, 0x89, 0x04, 0x24}, &Recipe{Len: 4, Width: 8, Src: SrcReg, Reg: 13, Base: 15, Index: NoReg, Scale: 1}},
		{"mov [r12*8+0x10],rax", []byte{0x4a, 0x89, 0x04, 0xe5, 0x10, 0, 0, 0}, &Recipe{Len: 8, Width: 8, Src: SrcReg, Reg: 13, Base: NoReg, Index: 4, Scale: 8, Disp: 0x10}},
		{"mov [rdi],ah", []byte{0x88, 0x27}, nil},
		{"mov fs:[0],rax", []byte{0x64, 0x48, 0x89, 0x04, 0x25, 0, 0, 0, 0}, nil},
		{"mov [edi],eax", []byte{0x67, 0x89, 0x07}, nil},
		{"add [rdi],rax", []byte{0x48, 0x01, 0x07}, &Recipe{Len: 3, Width: 8, Src: SrcReg, Reg: 13, Base: 8, Index: NoReg, Scale: 1, Op: OpAdd}},
		{"lock sub qword [rdi],1", []byte{0xf0, 0x48, 0x83, 0x2f, 0x01}, &Recipe{Len: 5, Width: 8, Src: SrcImm, Imm: 1, Base: 8, Index: NoReg, Scale: 1, Op: OpSub}},
		{"xor [rdi+8],cl", []byte{0x30, 0x4f, 0x08}, &Recipe{Len: 3, Width: 1, Src: SrcReg, Reg: 14, Base: 8, Index: NoReg, Scale: 1, Disp: 8, Op: OpXor}},
		{"inc dword [rdi]", []byte{0xff, 0x07}, &Recipe{Len: 2, Width: 4, Base: 8, Index: NoReg, Scale: 1, Op: OpInc}},
		{"lock dec qword [rip+0x10]", []byte{0xf0, 0x48, 0xff, 0x0d, 0x10, 0, 0, 0}, &Recipe{Len: 8, Width: 8, Base: RIPRel, Index: NoReg, Scale: 1, Disp: 0x10, Op: OpDec}},
		{"adc [rdi],rax", []byte{0x48, 0x11, 0x07}, nil},
		{"lock mov [rdi],rax", []byte{0xf0, 0x48, 0x89, 0x07}, nil},
		{"lock xadd [rdi],rax", []byte{0xf0, 0x48, 0x0f, 0xc1, 0x07}, nil},
		{"rep stosb", []byte{0xf3, 0xaa}, nil},
		{"movaps [rdi],xmm0", []byte{0x0f, 0x29, 0x07}, nil},
		{"mov rax,[rdi]", []byte{0x48, 0x8b, 0x07}, nil},
	}
	for _, c := range cases {
		inst, err := x86asm.Decode(c.code, 64)
		if err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		got, ok := RecipeFor(pc, inst)
		switch {
		case c.want == nil && ok:
			t.Errorf("%s: recipe %+v, want none", c.name, got)
		case c.want != nil && !ok:
			t.Errorf("%s: no recipe", c.name)
		case c.want != nil:
			w := *c.want
			w.PC = pc
			if got != w {
				t.Errorf("%s: %+v, want %+v", c.name, got, w)
			}
		}
	}
}

// TestRecipesRun: the recipes RecipeFor makes of the harness's own store
// instructions (read from its ELF), run by the agent: the same results as
// the harness's hand-written recipes.
func TestRecipesRun(t *testing.T) {
	dir := t.TempDir()
	// Not position-independent: the addresses in the ELF are the run's.
	bin := harness(t, "-no-pie")
	f, err := elf.Open(bin)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	text := f.Section(".text")
	code, err := text.Data()
	if err != nil {
		t.Fatal(err)
	}
	var file bytes.Buffer
	for _, name := range []string{"store8", "store4", "store1", "storerip"} {
		pc := fixture.Symbol(t, bin, name)
		if pc < text.Addr || pc >= text.Addr+text.Size {
			t.Fatalf("%s: not in .text", name)
		}
		off := pc - text.Addr
		inst, err := x86asm.Decode(code[off:min(off+15, uint64(len(code)))], 64)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		r, ok := RecipeFor(pc, inst)
		if !ok {
			t.Fatalf("%s (%v): no recipe", name, inst)
		}
		if err := binary.Write(&file, binary.LittleEndian, r); err != nil {
			t.Fatal(err)
		}
	}
	recipes := filepath.Join(dir, "recipes")
	blobPath := filepath.Join(dir, "agent.bin")
	if os.WriteFile(recipes, file.Bytes(), 0o644) != nil || os.WriteFile(blobPath, Blob(), 0o644) != nil {
		t.Fatal("writing the harness's files")
	}
	out, err := exec.Command(bin, blobPath, "--recipes", recipes).CombinedOutput()
	if err != nil || string(out) != harnessWant {
		t.Fatalf("harness: %v\n%s\nwant:\n%s", err, out, harnessWant)
	}
}
