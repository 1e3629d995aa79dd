package symbols

import (
	"bytes"
	"debug/elf"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"hash/crc32"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/memtrap/memtrap/pkg/dwarf/reader"
	"github.com/memtrap/memtrap/pkg/procmaps"
)

// answers is what a Table says about every pc of a module's text: Lookup
// and Params (without memory, over fixed registers) at each byte.
func answers(t testing.TB, tab *Table, lo, hi uint64) []string {
	t.Helper()
	fr := FrameRegs{CFA: 0x7ffc0000, RegsValid: 1<<17 - 1}
	for i := range fr.Regs {
		fr.Regs[i] = 0x1000 * uint64(i+1)
	}
	var out []string
	for pc := lo; pc < hi; pc++ {
		loc, ok := tab.Lookup(pc)
		fr.PC = pc
		ps, err := tab.Params(fr, nil)
		out = append(out, fmt.Sprintf("%#x %+v %v | %+v %v", pc, loc, ok, ps, err))
	}
	return out
}

// cacheFiles lists the files of dir.
func cacheFiles(t testing.TB, dir string) []string {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	return names
}

func hexBuildID(t testing.TB, path string) string {
	t.Helper()
	f, err := elf.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	id := buildID(f)
	if len(id) == 0 {
		t.Fatalf("%s has no build ID", path)
	}
	return hex.EncodeToString(id)
}

// TestCacheSameAnswers: a Table that reads a module's indexes from the
// cache answers every pc as one that walked its DWARF, and reads no DWARF
// to do it; DWARF 4 and 5, C, C++ and compressed sections.
func TestCacheSameAnswers(t *testing.T) {
	const base = 0x555555554000
	for _, name := range []string{"params-O2", "params-O2-dwarf4", namesCxx, dbgZlib, dbgO2} {
		t.Run(name, func(t *testing.T) {
			var path string
			for _, b := range paramsBuilds {
				if b.name == name {
					path = paramsFixture(t, name, b.flags)
				}
			}
			if path == "" {
				path = program(t, name)
			}
			maps := layout(t, path, base)
			lo, hi := textRange(t, path)
			_, bias, _, _ := NewTable(maps, Options{}).ModuleAt(maps[0].Start)
			lo, hi = lo+bias, hi+bias

			plain := NewTable(maps, Options{})
			defer plain.Close()
			want := answers(t, plain, lo, hi)

			dir := t.TempDir()
			cold := NewTable(maps, Options{CacheDir: dir})
			defer cold.Close()
			if got := answers(t, cold, lo, hi); !slices.Equal(got, want) {
				t.Fatalf("with an empty cache: %s", firstDiff(got, want))
			}
			id := hexBuildID(t, path)
			if got := cacheFiles(t, dir); !slices.Equal(got, []string{id + ".funcs", id + ".lines"}) {
				t.Fatalf("cache holds %q, want %s.funcs and .lines", got, id)
			}

			warm := NewTable(maps, Options{CacheDir: dir})
			defer warm.Close()
			if got := answers(t, warm, lo, hi); !slices.Equal(got, want) {
				t.Fatalf("from the cache: %s", firstDiff(got, want))
			}
			for _, o := range warm.objects {
				if o.dwarfDone {
					t.Errorf("%v: DWARF read although both indexes were in the cache", o.f.FileHeader)
				}
			}
		})
	}
}

func firstDiff(got, want []string) string {
	for i := range min(len(got), len(want)) {
		if got[i] != want[i] {
			return fmt.Sprintf("got\n  %s\nwant\n  %s", got[i], want[i])
		}
	}
	return fmt.Sprintf("%d answers, want %d", len(got), len(want))
}

// TestCacheRoundTrip: an index written and read back is the index.
func TestCacheRoundTrip(t *testing.T) {
	for _, name := range []string{namesCxx, dbgO2} {
		f, err := elf.Open(program(t, name))
		if err != nil {
			t.Fatal(err)
		}
		d, err := loadDWARF(f, nil)
		if err != nil {
			t.Fatal(err)
		}
		lt, err := buildLines(d, codeRanges(f))
		if err != nil {
			t.Fatal(err)
		}
		if got, err := decodeLines(encodeLines(lt)); err != nil || !reflect.DeepEqual(got, lt) {
			t.Errorf("%s: lines read back differ (%v)", name, err)
		}
		fx, err := buildFuncIndex(d, f, nil)
		if err != nil {
			t.Fatal(err)
		}
		sizeParams(d, fx)
		if len(fx.funcs) == 0 || len(fx.ranges) == 0 {
			t.Fatalf("%s: no functions indexed", name)
		}
		if got, err := decodeFuncs(encodeFuncs(fx)); err != nil || !reflect.DeepEqual(got, fx) {
			t.Errorf("%s: function index read back differs (%v)", name, err)
		}
		f.Close()
	}
}

// TestCacheIgnoresBadFiles: a cache file that is damaged, of another
// version, built from other sources or not a file is not used, and is
// replaced by a good one where it can be; the answers stay those of a
// Table without cache. A file for these sources is used, bogus or not:
// which shows the test can tell.
func TestCacheIgnoresBadFiles(t *testing.T) {
	const base = 0x555555554000
	path := program(t, dbgO2)
	maps := layout(t, path, base)
	lo, hi := textRange(t, path)
	plain := NewTable(maps, Options{})
	defer plain.Close()
	_, bias, _, _ := plain.ModuleAt(maps[0].Start)
	lo, hi = lo+bias, hi+bias
	want := answers(t, plain, lo, hi)

	dir := t.TempDir()
	good := NewTable(maps, Options{CacheDir: dir})
	answers(t, good, lo, hi)
	good.Close()
	linesFile := filepath.Join(dir, hexBuildID(t, path)+".lines")
	orig, err := os.ReadFile(linesFile)
	if err != nil {
		t.Fatal(err)
	}
	hdr := len(orig) - len(readCache(linesFile, cacheLines, sourcesOf(t, orig)))

	// A well-formed file for these sources that says every pc is in
	// /bogus.c line 7.
	bogus := encodeLines(&lineTable{addrs: []uint64{0}, rows: []lineRow{{0, 7}}, files: []string{"/bogus.c"}})
	forged := func(version uint64, sources uint64, payload []byte) []byte {
		var e cacheEnc
		e.b = append(e.b, cacheMagic...)
		e.u(version)
		e.str(cacheLines)
		e.b = binary.LittleEndian.AppendUint64(e.b, sources)
		e.u(uint64(len(payload)))
		e.b = binary.LittleEndian.AppendUint32(e.b, crc32.ChecksumIEEE(payload))
		return append(e.b, payload...)
	}
	src := sourcesOf(t, orig)
	flipped := bytes.Clone(orig)
	flipped[len(flipped)-1] ^= 0x40
	cases := []struct {
		name    string
		content []byte
		used    bool
	}{
		{"bogus for these sources", forged(cacheVersion, src, bogus), true},
		{"other sources", forged(cacheVersion, src+1, bogus), false},
		{"other version", forged(cacheVersion+1, src, bogus), false},
		{"truncated", orig[:len(orig)-5], false},
		{"header only", orig[:hdr], false},
		{"payload byte flipped", flipped, false},
		{"empty", nil, false},
		{"garbage", bytes.Repeat([]byte{0xff}, 300), false},
		{"bad payload, good CRC", forged(cacheVersion, src, []byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f}), false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if err := os.WriteFile(linesFile, c.content, 0o600); err != nil {
				t.Fatal(err)
			}
			tab := NewTable(maps, Options{CacheDir: dir})
			defer tab.Close()
			got := answers(t, tab, lo, hi)
			if c.used {
				if loc, _ := tab.Lookup(lo); loc.File != "/bogus.c" || loc.Line != 7 {
					t.Fatalf("Lookup = %+v: the cache file was not used", loc)
				}
				return
			}
			if !slices.Equal(got, want) {
				t.Fatalf("%s", firstDiff(got, want))
			}
			if now, _ := os.ReadFile(linesFile); !bytes.Equal(now, orig) {
				t.Errorf("the bad file was not replaced by a good one")
			}
		})
	}
	t.Run("a directory", func(t *testing.T) {
		os.Remove(linesFile)
		if err := os.Mkdir(linesFile, 0o700); err != nil {
			t.Fatal(err)
		}
		defer os.Remove(linesFile)
		tab := NewTable(maps, Options{CacheDir: dir})
		defer tab.Close()
		if got := answers(t, tab, lo, hi); !slices.Equal(got, want) {
			t.Fatalf("%s", firstDiff(got, want))
		}
	})
	t.Run("no directory", func(t *testing.T) {
		tab := NewTable(maps, Options{CacheDir: filepath.Join(linesFile+"x", "sub")})
		defer tab.Close()
		os.WriteFile(linesFile+"x", nil, 0o600) // a file where the directory would be
		if got := answers(t, tab, lo, hi); !slices.Equal(got, want) {
			t.Fatalf("%s", firstDiff(got, want))
		}
	})
	for _, n := range cacheFiles(t, dir) {
		if strings.HasSuffix(n, ".tmp") {
			t.Errorf("temporary file %s left behind", n)
		}
	}
}

// sourcesOf reads the sources hash from a cache file's header.
func sourcesOf(t *testing.T, file []byte) uint64 {
	t.Helper()
	r := reader.New(file[len(cacheMagic):])
	r.ULEB128()          // version
	r.Bytes(r.ULEB128()) // kind
	v := r.U64()
	if r.Err() != nil {
		t.Fatalf("cache file header: %v", r.Err())
	}
	return v
}

// TestCacheLibc: glibc's debug file, where the cache matters (0.3 s of
// DWARF at every run otherwise): the first pcs of each function of libc
// answer the same from the cache.
func TestCacheLibc(t *testing.T) {
	pid, _ := sleeper(t, program(t, progPIE))
	maps, err := procmaps.Read(pid)
	if err != nil {
		t.Fatal(err)
	}
	var libc []procmaps.Mapping
	for _, m := range maps {
		if strings.HasSuffix(m.Path, "/libc.so.6") {
			libc = append(libc, m)
		}
	}
	if len(libc) == 0 {
		t.Skip("the fixture does not map libc.so.6")
	}
	plain := NewTable(libc, Options{})
	defer plain.Close()
	mod := func(tab *Table) *module { tab.mu.Lock(); defer tab.mu.Unlock(); return tab.moduleAt(libc[0].Start) }
	if m := mod(plain); m == nil || !m.biasOK {
		t.Skip("libc.so.6 not readable")
	}
	if plain.funcIndex(mod(plain).obj, libc[0].Path); len(mod(plain).obj.funcs.funcs) == 0 {
		t.Skip("no DWARF for libc.so.6 here (libc6-dbg not installed)")
	}
	m := mod(plain)
	var pcs []uint64
	for i, r := range m.obj.funcs.ranges {
		if i%7 == 0 {
			pcs = append(pcs, m.bias+r.lo, m.bias+r.lo+(r.hi-r.lo)/2)
		}
	}
	ask := func(tab *Table) []string {
		var out []string
		for _, pc := range pcs {
			out = append(out, answers(t, tab, pc, pc+1)...)
		}
		return out
	}
	want := ask(plain)
	dir := t.TempDir()
	for _, pass := range []string{"cold", "warm"} {
		tab := NewTable(libc, Options{CacheDir: dir})
		if got := ask(tab); !slices.Equal(got, want) {
			t.Errorf("%s: %s", pass, firstDiff(got, want))
		}
		tab.Close()
	}
	if len(cacheFiles(t, dir)) != 2 {
		t.Errorf("cache holds %q", cacheFiles(t, dir))
	}
}

// FuzzCacheDecode: a cache file's payload, whatever it holds, is read
// back or refused, never a panic.
func FuzzCacheDecode(f *testing.F) {
	f.Add(encodeLines(&lineTable{addrs: []uint64{0x10, 0x20}, rows: []lineRow{{0, 3}, {-1, 0}}, files: []string{"a.c"}}))
	f.Add(encodeFuncs(&funcIndex{units: []unitInfo{{version: 5}}, funcs: []funcDesc{{params: []paramDesc{{name: "x", loc: locAttr{kind: locExpr, expr: []byte{0x55}}}}}},
		ranges: []funcRange{{lo: 0x10, hi: 0x20}}}))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, p []byte) {
		if lt, err := decodeLines(p); err == nil {
			lt.find(0x15)
		}
		if fx, err := decodeFuncs(p); err == nil {
			if fn := fx.find(0x15); fn != nil {
				for _, q := range fn.params {
					fx.locExpr(q.loc, fn.cu, 0x15)
				}
			}
		}
	})
}
