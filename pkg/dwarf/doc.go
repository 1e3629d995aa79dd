// Package dwarf is the root of memtrap's own DWARF decoding: small packages
// that the unwinder (pkg/unwind) and the symbol tables (pkg/symbols) share,
// so that each encoding is read in one place.
//
//   - [github.com/memtrap/memtrap/pkg/dwarf/leb128] encodes and decodes
//     LEB128 numbers.
//   - [github.com/memtrap/memtrap/pkg/dwarf/reader] is a cursor over a byte
//     slice with fixed-width, LEB128 and string reads and a sticky error.
//   - [github.com/memtrap/memtrap/pkg/dwarf/op] evaluates DWARF expressions:
//     CFA rules for the unwinder, locations of variables for the symbol
//     tables.
//
// The standard library's debug/dwarf still reads .debug_info and the line
// tables; these packages cover what it does not expose. All of them are
// pure: bytes in, values out, memory through an interface, no globals.
package dwarf
