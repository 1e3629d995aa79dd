// Package op evaluates DWARF expressions (DWARF 5, sections 2.5 and 2.6):
// the stack machine over DW_OP_* operations in which both call frame
// information and the locations of variables are written.
//
// pkg/unwind evaluates CFA rules with it (DW_CFA_def_cfa_expression,
// DW_CFA_expression, DW_CFA_val_expression), whose value is what the
// expression leaves on top of the stack. pkg/symbols evaluates locations
// (DW_AT_location, DW_AT_frame_base, DW_AT_data_member_location), whose
// [Result] says where an object is: in memory, in a register, or only in
// the expression itself (DW_OP_stack_value, DW_OP_implicit_value).
//
// # What an expression sees
//
// An [Env] gives it the frame's registers in DWARF numbering with a mask
// of those known, the CFA and the frame base when they are known, the load
// bias added to DW_OP_addr operands, and the target's memory through
// [Memory]. Whatever the Env lacks (a register the unwinder did not
// recover, the CFA inside a CFA rule, memory) fails the evaluation with an
// error wrapping [ErrUnavailable]: the evaluator never guesses.
//
// # Limits
//
// The stack holds 64 entries and an evaluation runs at most 10000
// operations, since branches can loop. Of a composite location (DW_OP_piece)
// only the first piece is described. Typed stack entries (DWARF 5's
// DW_OP_convert and friends), DW_OP_entry_value, DW_OP_addrx, TLS and
// implicit pointers are not evaluated ([ErrUnsupported]). Hostile input
// gives an error; it never panics, loops or allocates.
//
// # Concurrency
//
// [Eval] keeps no state between calls and only reads its Env, so any number
// of evaluations may run at once; Memory must then be safe for that too.
package op
