package unwind

import (
	"bufio"
	"bytes"
	"debug/elf"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"

	"github.com/memtrap/memtrap/pkg/dwarf/reader"
)

// A recording is a stack that testdata/stack.c wrote of itself: the
// registers of its innermost frame, its memory map, and the stack bytes. It
// replays as the Memory and Modules of the process that wrote it: stack
// reads come from the recorded bytes and code reads from the files mapped.
type recording struct {
	regs        Regs
	interruptIP uint64 // rip and rsp of the code a signal interrupted
	interruptSP uint64
	maps        []mapping
	regions     []region

	mu    sync.Mutex // guards the lazily filled maps: unwinds may run concurrently
	files map[string]*os.File
	elfs  map[string]*recModule
}

type mapping struct {
	start, end, off uint64
	perms, path     string
}

type region struct {
	addr uint64
	data []byte
}

type recModule struct {
	f     *elf.File
	bias  uint64
	funcs []elf.Symbol // sorted by address
}

func loadRecording(path string) (*recording, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	r := reader.New(b)
	if string(r.Bytes(8)) != "MTRAPSTK" {
		return nil, fmt.Errorf("%s: not a recording", path)
	}
	rec := &recording{files: map[string]*os.File{}, elfs: map[string]*recModule{}}
	for i := range rec.regs {
		rec.regs[i] = r.U64()
	}
	rec.interruptIP, rec.interruptSP = r.U64(), r.U64()
	maps := r.Bytes(r.U64())
	n := r.U64()
	for i := uint64(0); i < n && r.Err() == nil; i++ {
		addr := r.U64()
		rec.regions = append(rec.regions, region{addr: addr, data: r.Bytes(r.U64())})
	}
	if r.Err() != nil {
		return nil, fmt.Errorf("%s: %w", path, r.Err())
	}
	sc := bufio.NewScanner(bytes.NewReader(maps))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) < 5 {
			continue
		}
		var m mapping
		lo, hi, _ := strings.Cut(f[0], "-")
		m.start, _ = strconv.ParseUint(lo, 16, 64)
		m.end, _ = strconv.ParseUint(hi, 16, 64)
		m.off, _ = strconv.ParseUint(f[2], 16, 64)
		m.perms = f[1]
		if len(f) >= 6 {
			m.path = f[5]
		}
		rec.maps = append(rec.maps, m)
	}
	return rec, nil
}

func (rec *recording) close() {
	for _, f := range rec.files {
		f.Close()
	}
	for _, m := range rec.elfs {
		if m != nil {
			m.f.Close()
		}
	}
}

func (rec *recording) mappingAt(addr uint64) *mapping {
	for i := range rec.maps {
		if m := &rec.maps[i]; addr >= m.start && addr < m.end {
			return m
		}
	}
	return nil
}

var errUnreadable = errors.New("not in the recording")

func (rec *recording) ReadMemory(addr uint64, p []byte) error {
	end := addr + uint64(len(p))
	for _, r := range rec.regions {
		if addr >= r.addr && end >= addr && end <= r.addr+uint64(len(r.data)) {
			copy(p, r.data[addr-r.addr:])
			return nil
		}
	}
	m := rec.mappingAt(addr)
	if m == nil || end > m.end || !strings.HasPrefix(m.path, "/") || m.perms[0] != 'r' || m.perms[1] == 'w' {
		return fmt.Errorf("%#x: %w", addr, errUnreadable)
	}
	rec.mu.Lock()
	defer rec.mu.Unlock()
	f := rec.files[m.path]
	if f == nil {
		var err error
		if f, err = os.Open(m.path); err != nil {
			return err
		}
		rec.files[m.path] = f
	}
	_, err := f.ReadAt(p, int64(m.off+addr-m.start))
	return err
}

// module opens path the first time it is asked for. Precondition: rec.mu
// is held.
func (rec *recording) module(path string) *recModule {
	if m, ok := rec.elfs[path]; ok {
		return m
	}
	rec.elfs[path] = nil
	f, err := elf.Open(path)
	if err != nil {
		return nil
	}
	m := &recModule{f: f}
	if f.Type == elf.ET_DYN {
		for _, p := range f.Progs {
			if p.Type != elf.PT_LOAD {
				continue
			}
			for _, mm := range rec.maps {
				if mm.path == path && mm.off == p.Off&^0xfff {
					m.bias = mm.start - p.Vaddr&^0xfff
					break
				}
			}
			break
		}
	}
	syms, _ := f.Symbols()
	if len(syms) == 0 {
		syms, _ = f.DynamicSymbols()
	}
	for _, s := range syms {
		if elf.ST_TYPE(s.Info) == elf.STT_FUNC && s.Value != 0 {
			m.funcs = append(m.funcs, s)
		}
	}
	sort.Slice(m.funcs, func(i, j int) bool { return m.funcs[i].Value < m.funcs[j].Value })
	rec.elfs[path] = m
	return m
}

func (rec *recording) ModuleAt(pc uint64) (*elf.File, uint64, string, bool) {
	mp := rec.mappingAt(pc)
	if mp == nil || !strings.HasPrefix(mp.path, "/") {
		return nil, 0, "", false
	}
	rec.mu.Lock()
	m := rec.module(mp.path)
	rec.mu.Unlock()
	if m == nil {
		return nil, 0, mp.path, false
	}
	return m.f, m.bias, mp.path, true
}

// funcName names the function frame i of frames is in, as "name" in the
// test program and "base:name" elsewhere; "?" when no symbol covers it. A
// return address is looked up one byte back, as the unwinder does.
func (rec *recording) funcName(frames []Frame, i int) string {
	fr := frames[i]
	pc := fr.PC
	if i > 0 && !fr.Signal {
		pc--
	}
	mp := rec.mappingAt(pc)
	if mp == nil {
		return fmt.Sprintf("%#x", fr.PC)
	}
	rec.mu.Lock()
	m := rec.module(mp.path)
	rec.mu.Unlock()
	name := "?"
	if m != nil {
		a := pc - m.bias
		j := sort.Search(len(m.funcs), func(j int) bool { return m.funcs[j].Value > a })
		// Look back over a few symbols: aliases and nested labels.
		for k := j - 1; k >= 0 && k >= j-8; k-- {
			if s := m.funcs[k]; a < s.Value+s.Size {
				name = s.Name
				break
			}
		}
	}
	if strings.HasPrefix(filepath.Base(mp.path), "stack-") {
		return name
	}
	return filepath.Base(mp.path) + ":" + name
}

// regionOf returns the index of the recorded region holding addr, or -1.
func (rec *recording) regionOf(addr uint64) int {
	for i, r := range rec.regions {
		if addr >= r.addr && addr < r.addr+uint64(len(r.data)) {
			return i
		}
	}
	return -1
}
