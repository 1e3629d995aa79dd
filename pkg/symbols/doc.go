// Package symbols turns addresses in a traced process into function and
// variable names, and names into addresses. It reads ELF files only; it knows
// nothing of ptrace, and it is tested over mappings built by hand.
//
// # Tables and modules
//
// A [Table] is built from a process's memory map ([procmaps.Read]) with
// [NewTable]. Each distinct file behind a mapping (keyed by path, device and
// inode) is a module; the vDSO is one too when [Options.ReadMemory] can read
// it, since the kernel maps a complete ELF image there. Heap, stack and
// anonymous mappings are not modules, except that an anonymous mapping right
// after a module's last page counts as that module's .bss as far as its
// PT_LOAD segments reach.
//
// Nothing is opened by NewTable. A module's file is opened and parsed the
// first time an address in it is looked up or a name is resolved, and the
// result, good or bad, is kept until [Table.Close]. [Table.Update] installs a
// newer memory map (after dlopen, dlclose or exec) and reuses every file
// parsed so far. A file that cannot be opened or parsed (deleted, no
// permission, not ELF, corrupt) makes its addresses resolve to the module
// alone, with no function name and no error.
//
// # Load bias
//
// A module's symbols hold link-time addresses; the bias is what the loader
// added to them. For a non-PIE executable (ET_EXEC) it is 0. Otherwise it is
// the start of the mapping whose file offset is the first PT_LOAD's p_offset
// rounded down to a page, minus that segment's p_vaddr rounded down to a
// page: the kernel and ld.so map each segment page-aligned in both. The
// Offset of a [Location] with no function, and the address arithmetic of an
// unwinder given [Table.ModuleAt], are in link-time terms: pc minus bias.
//
// # Symbols
//
// A module's symbols come from .symtab or, when the file is stripped, from
// the .symtab of its separate debug file (see below), or else from .dynsym. Functions (STT_FUNC, STT_GNU_IFUNC) and data objects
// (STT_OBJECT) count; TLS symbols do not, since their values are offsets in
// a thread's TLS block, not addresses. When several symbols share an
// address, [Table.Lookup] names the first by this order: a symbol of the
// default version before a hidden one (memcpy@@GLIBC_2.14 before
// memcpy@GLIBC_2.2.5), global before weak before local, fewer leading
// underscores, shorter, then byte order. So libc's "memset" wins over
// "__memset" and a public alias over "__impl_f". A symbol of size 0 covers
// the bytes up to the next symbol or the end of its section. A symbol inside
// another (a local label inside a function) wins within its own extent.
//
// Lookup shows names as gdb's backtrace does: C++ names demangled with
// their parameter types ("ns::Counter::value(int)"), Rust names, legacy or
// v0, demangled without legacy mangling's hash ("demo::worker"), and
// everything else, Go's "main.worker" and "pkg.(*T).M" included, as the
// symbol table has it.
//
// [Table.Resolve] accepts "name", "name+OFF" and "module:name+OFF"; see its
// documentation. A name is an ELF symbol, mangled or demangled (with or
// without the parameter list), else a DWARF variable, else a DWARF variable
// and struct members ("session.token"). Modules are searched in the order
// they first appear in the memory map, the main executable first, and the
// first definition wins, as with the dynamic linker. A name that is defined
// nowhere gives a [*NotFoundError] carrying the closest names that are; a
// demangled name without parameters that fits overloads gives an
// [*AmbiguousError].
//
// # Source lines and DWARF
//
// [Location.File] and [Location.Line] come from the DWARF line table of the
// module, read (DWARF 2 to 5, compressed sections too, SHF_COMPRESSED or
// .zdebug) the first time Lookup needs it and kept as a sorted array: the
// line of a pc is then one more binary search. Rows are read as binutils'
// addr2line reads them: the last row at an address wins, line 0 is no line,
// and sequences that do not start in an executable section (functions the
// linker discarded, left at address 0) are dropped.
//
// A module with no .symtab or no DWARF of its own is given the separate
// debug file a distribution installs, looked for by build ID in
// DIR/.build-id/xx/yyyy.debug and then by .gnu_debuglink next to the
// module, in its .debug subdirectory and in DIR/<module's directory>, for
// each DIR of [Options.DebugDirs] (default /usr/lib/debug). A debug file
// found by build ID must carry that build ID, one found by debug link the
// link's CRC-32. Its .symtab replaces the module's .dynsym and its DWARF
// gives lines and variables; the module's own file still serves
// [Table.ModuleAt]. MiniDebugInfo (.gnu_debugdata, an xz-compressed
// .symtab) is not read: the standard library has no xz decoder.
//
// Damaged DWARF costs lines or variables, never symbols: what could not be
// read is kept as an error on the module, reported by [Table.ModuleErr].
// Compressed debug sections that claim to inflate past reason are not
// inflated, and DWARF types are walked with bounds of this package's own
// rather than through debug/dwarf's Type, which recurses without limit on
// cyclic types.
//
// # Parameters
//
// [Table.Params] lists the formal parameters of the out-of-line function
// (DW_TAG_subprogram, by DW_AT_low_pc/high_pc or DW_AT_ranges) covering a
// frame's pc, with their values, as gdb's backtrace shows them. The first
// call for a module indexes its subprograms by pc range and keeps the raw
// .debug_loc, .debug_loclists and .debug_addr sections; location lists are
// parsed here, since debug/dwarf does not (DWARF 2-4 with base address
// selection, DWARF 5 with every DW_LLE_* kind and gcc's view pairs), with
// pkg/dwarf/reader, and a unit's version is read from its .debug_info
// header. The location expressions, the frame base (DW_OP_call_frame_cfa,
// DW_OP_fbreg) among them, are evaluated by pkg/dwarf/op, the evaluator
// pkg/unwind runs CFA rules with, over the registers and CFA the caller
// vouches for ([FrameRegs]). For an outer frame those are what the
// unwinder recovered, [github.com/memtrap/memtrap/pkg/unwind.Frame]'s Regs
// and Valid: its rsp and rip, and the callee-saved registers (rbx, rbp,
// r12-r15), so a parameter an optimizing compiler keeps in one of them
// across a call has its value, and one in a scratch register of an outer
// frame does not. What cannot be evaluated (DW_OP_entry_value, TLS,
// implicit pointers, later pieces, a register the frame does not vouch
// for) is a parameter not Known, gdb's <optimized out>. Values wider than
// 8 bytes are not read. Inlined subroutines are not described.
//
// The same evaluator gives the offsets of struct members whose
// DW_AT_data_member_location is an expression (DWARF 2).
//
// # Index cache
//
// Building a module's line table and function index walks all of its
// DWARF: 0.3 s for glibc's debug file, at every run that shows a frame in
// libc. With [Options.CacheDir] set, each index built without error is
// written there, one file per build ID and kind (written whole to a
// temporary name, then renamed), and a later Table over the same file
// reads it instead of the DWARF; the file's header names the format's
// version and a hash of the DWARF source's debug section headers and the
// module's code sections, and a CRC-32 covers the rest. A file missing,
// of another version or other sources, or damaged in any way is ignored
// and written anew; a file without a build ID or DWARF is never cached.
// Reading the DWARF for what the indexes do not hold (variables, types of
// locals) happens as without the cache.
//
// # Concurrency and lifetime
//
// A Table is safe for concurrent use; a mutex guards its lazily filled
// caches. [Table.Lookup] and [Table.Params] are meant for the hot path: the
// same store sites write a hot region over and over, so what a runtime pc
// needs that only the memory map changes (its module, symbol and offset,
// demangled name, file and line; its function's frame base and each
// parameter's size and location expression there) is kept per pc, up to
// 16384 of them, until the next [Table.Update]. A pc seen before costs a
// map lookup, and for Params the evaluation of those expressions over the
// frame given: a warm Lookup does not allocate, a warm Params allocates
// its result. The
// *elf.File handed out by [Table.ModuleAt] stays valid until Close, even if
// a later Update no longer maps its module; so do the debug files a Table
// opens, which Close closes.
//
// Untrusted input never panics the caller: debug/elf and debug/dwarf are
// run under recover and a panic becomes an error for that module.
package symbols
