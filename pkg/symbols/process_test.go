package symbols

import (
	"bufio"
	"encoding/binary"
	"fmt"
	"github.com/memtrap/memtrap/pkg/procmaps"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestLiveProcess symbolizes a running program from its real memory map and
// checks the answers against what the program itself printed and holds.
func TestLiveProcess(t *testing.T) {
	exe := program(t, progPIE)
	nm := nmSymbols(t, exe)
	pid, line := sleeper(t, exe)
	var counterAddr, mainAddr uint64
	if _, err := fmt.Sscanf(line, "counter=0x%x main=0x%x", &counterAddr, &mainAddr); err != nil {
		t.Fatalf("program said %q: %v", line, err)
	}

	maps, err := procmaps.Read(pid)
	if err != nil {
		t.Fatal(err)
	}
	mem, err := os.Open(fmt.Sprintf("/proc/%d/mem", pid))
	if err != nil {
		t.Fatal(err)
	}
	defer mem.Close()
	read := func(addr uint64, p []byte) error {
		_, err := mem.ReadAt(p, int64(addr))
		return err
	}
	tab := NewTable(maps, Options{Root: fmt.Sprintf("/proc/%d/root", pid), ReadMemory: read})
	defer tab.Close()

	// The executable's bias is where its first page is mapped.
	var exeStart uint64
	for _, m := range maps {
		if m.Path == exe && m.Offset == 0 {
			exeStart = m.Start
			break
		}
	}
	if exeStart == 0 {
		t.Fatalf("%s not in maps", exe)
	}
	_, bias, path, ok := tab.ModuleAt(mainAddr)
	if !ok || path != exe || bias != exeStart || bias != mainAddr-nm["main"].addr {
		t.Fatalf("ModuleAt(main) = bias %#x, %q, %v; mapped at %#x, main-nm = %#x",
			bias, path, ok, exeStart, mainAddr-nm["main"].addr)
	}

	counter, err := tab.Resolve("counter")
	if err != nil {
		t.Fatal(err)
	}
	if counter.Addr != counterAddr || counter.Module != exe || counter.Size != 4 {
		t.Fatalf("Resolve(counter) = %+v; the program says %#x", counter, counterAddr)
	}
	var val [4]byte
	if err := read(counter.Addr, val[:]); err != nil {
		t.Fatal(err)
	}
	if v := binary.LittleEndian.Uint32(val[:]); v != 0x1234567 {
		t.Fatalf("counter holds %#x, want 0x1234567", v)
	}
	if loc, ok := tab.Lookup(mainAddr + 3); !ok || loc != (Location{Func: "main", Offset: 3, Module: exe, ModuleBase: bias}) {
		t.Fatalf("Lookup(main+3) = %+v, %v", loc, ok)
	}

	// A libc function round-trips through Resolve and Lookup.
	memset, err := tab.Resolve("memset")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(filepath.Base(memset.Module), "libc.so") {
		t.Fatalf("memset resolved in %s", memset.Module)
	}
	if q, err := tab.Resolve("libc:memset"); err != nil || q != memset {
		t.Fatalf("Resolve(libc:memset) = %+v, %v; want %+v", q, err, memset)
	}
	loc, ok := tab.Lookup(memset.Addr)
	if !ok || loc.Func != "memset" || loc.Offset != 0 || loc.Module != memset.Module {
		t.Fatalf("Lookup(memset) = %+v, %v", loc, ok)
	}

	// The vDSO, read from the target's memory.
	vt, err := tab.Resolve("__vdso_clock_gettime")
	if err != nil {
		t.Fatal(err)
	}
	if loc, ok := tab.Lookup(vt.Addr + 2); !ok || loc.Module != "[vdso]" || loc.Offset != 2 {
		t.Fatalf("Lookup(__vdso_clock_gettime+2) = %+v, %v", loc, ok)
	}
}

// sleeper starts exe (testdata/prog.c) in its sleep mode, killed at the
// test's end, and returns its pid and the line it printed once it has run
// its start-up (its libraries mapped).
func sleeper(t *testing.T, exe string) (pid int, line string) {
	t.Helper()
	cmd := exec.Command(exe, "sleep")
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
	})
	line, err = bufio.NewReader(stdout).ReadString('\n')
	if err != nil {
		t.Fatalf("reading the program's report: %v", err)
	}
	return cmd.Process.Pid, line
}
