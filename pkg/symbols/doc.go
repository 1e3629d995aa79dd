// Package symbols turns addresses in a traced process into function and
// variable names, and names into addresses. It reads ELF files only; it knows
// nothing of ptrace, and it is tested over mappings built by hand.
//
// # Tables and modules
//
// A [Table] is built from a process's memory map ([tracer.ReadMaps]) with
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
// A module's symbols come from .symtab, or from .dynsym when the file is
// stripped. Functions (STT_FUNC, STT_GNU_IFUNC) and data objects
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
// [Table.Resolve] accepts "name", "name+OFF" and "module:name+OFF"; see its
// documentation. Modules are searched in the order they first appear in the
// memory map, the main executable first, and the first definition wins, as
// with the dynamic linker. A name that is defined nowhere gives a
// [*NotFoundError] carrying the closest names that are.
//
// # Concurrency and lifetime
//
// A Table is safe for concurrent use; a mutex guards its lazily filled
// caches. [Table.Lookup] is meant for the hot path: after a module is
// loaded it is two binary searches and does not allocate. The *elf.File
// handed out by [Table.ModuleAt] stays valid until Close, even if a later
// Update no longer maps its module.
//
// Untrusted input never panics the caller: debug/elf is run under recover
// and a panic becomes a parse error for that module.
package symbols
