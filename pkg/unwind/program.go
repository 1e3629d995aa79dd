package unwind

import (
	"errors"
	"fmt"

	"github.com/memtrap/memtrap/pkg/dwarf/reader"
)

// ruleKind says how to recover a register of the caller.
type ruleKind uint8

const (
	ruleUnset         ruleKind = iota // no rule: the value is unchanged (callee-saved by the ABI)
	ruleUndefined                     // the value cannot be recovered
	ruleSameValue                     // unchanged, said explicitly
	ruleOffset                        // saved at CFA+off
	ruleValOffset                     // the value is CFA+off
	ruleRegister                      // the value is in register reg
	ruleExpression                    // saved at the address expr computes from CFA
	ruleValExpression                 // the value is what expr computes from CFA
)

type rule struct {
	kind ruleKind
	reg  uint64
	off  int64
	expr []byte
}

// A row is the unwind table's row for one PC: the CFA rule and a rule for
// each register. Registers beyond rip (vector registers) are not tracked.
type row struct {
	cfaIsExpr bool
	cfaReg    uint64
	cfaOff    int64
	cfaExpr   []byte
	regs      [numRegs]rule
}

// DW_CFA_* opcodes. The top two bits of the first three carry the opcode
// and the low six an operand.
const (
	cfaAdvanceLoc      = 0x40
	cfaOffset          = 0x80
	cfaRestore         = 0xc0
	cfaNop             = 0x00
	cfaSetLoc          = 0x01
	cfaAdvanceLoc1     = 0x02
	cfaAdvanceLoc2     = 0x03
	cfaAdvanceLoc4     = 0x04
	cfaOffsetExtended  = 0x05
	cfaRestoreExtended = 0x06
	cfaUndefined       = 0x07
	cfaSameValue       = 0x08
	cfaRegister        = 0x09
	cfaRememberState   = 0x0a
	cfaRestoreState    = 0x0b
	cfaDefCFA          = 0x0c
	cfaDefCFARegister  = 0x0d
	cfaDefCFAOffset    = 0x0e
	cfaDefCFAExpr      = 0x0f
	cfaExpression      = 0x10
	cfaOffsetExtSF     = 0x11
	cfaDefCFASF        = 0x12
	cfaDefCFAOffsetSF  = 0x13
	cfaValOffset       = 0x14
	cfaValOffsetSF     = 0x15
	cfaValExpression   = 0x16
	cfaMIPSAdvanceLoc8 = 0x1d
	cfaGNUWindowSave   = 0x2d
	cfaGNUArgsSize     = 0x2e
	cfaGNUNegOffsetExt = 0x2f
)

// maxRememberDepth bounds DW_CFA_remember_state nesting; compilers nest
// one or two deep, and hostile CFI must not make us allocate without limit.
const maxRememberDepth = 64

var errRememberDepth = errors.New("DW_CFA_remember_state nested too deep")

// machine executes CFA programs. Its remember stack is reused from one run
// to the next, so a warm machine does not allocate.
type machine struct {
	row     row
	initial row // the row after the CIE's instructions, for DW_CFA_restore
	saved   []row
}

// rowFor computes the row of f's table that applies at link-time address pc.
func (m *machine) rowFor(s *cfiSection, f *fde, pc uint64) error {
	m.row = row{}
	m.saved = m.saved[:0]
	if err := m.run(s, f, f.cie.initial, 0, ^uint64(0), true); err != nil {
		return fmt.Errorf("CIE of FDE at %#x: %w", f.off, err)
	}
	m.initial = m.row
	m.saved = m.saved[:0]
	if err := m.run(s, f, f.insns, f.insnsAddr, pc, false); err != nil {
		return fmt.Errorf("FDE at %#x: %w", f.off, err)
	}
	return nil
}

// run executes program until the location passes pc. Location-advancing
// instructions are ignored in a CIE's initial instructions.
func (m *machine) run(s *cfiSection, f *fde, program []byte, addr, pc uint64, inCIE bool) error {
	c := f.cie
	r := reader.New(program)
	loc := f.lo
	b := s.bases
	// advance moves to a new location and reports whether pc is still at or
	// past it; the current row is the answer once it is not.
	advance := func(delta uint64) bool {
		if inCIE {
			return true
		}
		loc += delta * c.codeAlign
		return pc >= loc
	}
	set := func(reg uint64, rl rule) {
		if reg < numRegs {
			m.row.regs[reg] = rl
		}
	}
	for r.Len() > 0 && r.Err() == nil {
		op := r.U8()
		switch op & 0xc0 {
		case cfaAdvanceLoc:
			if !advance(uint64(op & 0x3f)) {
				return nil
			}
			continue
		case cfaOffset:
			set(uint64(op&0x3f), rule{kind: ruleOffset, off: int64(r.ULEB128()) * c.dataAlign})
			continue
		case cfaRestore:
			if reg := uint64(op & 0x3f); reg < numRegs {
				m.row.regs[reg] = m.initial.regs[reg]
			}
			continue
		}
		switch op {
		case cfaNop, cfaGNUWindowSave:
		case cfaSetLoc:
			b.pc = addr
			var newLoc uint64
			if s.eh {
				newLoc, _ = readPointer(&r, c.fdeEnc, &b)
			} else if c.addrSize == 4 {
				newLoc = uint64(r.U32())
			} else {
				newLoc = r.U64()
			}
			if !inCIE {
				if newLoc < loc {
					return fmt.Errorf("DW_CFA_set_loc %#x moves back from %#x", newLoc, loc)
				}
				loc = newLoc
				if pc < loc {
					return nil
				}
			}
		case cfaAdvanceLoc1:
			if !advance(uint64(r.U8())) {
				return nil
			}
		case cfaAdvanceLoc2:
			if !advance(uint64(r.U16())) {
				return nil
			}
		case cfaAdvanceLoc4:
			if !advance(uint64(r.U32())) {
				return nil
			}
		case cfaMIPSAdvanceLoc8:
			if !advance(r.U64()) {
				return nil
			}
		case cfaOffsetExtended:
			reg := r.ULEB128()
			set(reg, rule{kind: ruleOffset, off: int64(r.ULEB128()) * c.dataAlign})
		case cfaOffsetExtSF:
			reg := r.ULEB128()
			set(reg, rule{kind: ruleOffset, off: r.SLEB128() * c.dataAlign})
		case cfaGNUNegOffsetExt:
			reg := r.ULEB128()
			set(reg, rule{kind: ruleOffset, off: -int64(r.ULEB128()) * c.dataAlign})
		case cfaValOffset:
			reg := r.ULEB128()
			set(reg, rule{kind: ruleValOffset, off: int64(r.ULEB128()) * c.dataAlign})
		case cfaValOffsetSF:
			reg := r.ULEB128()
			set(reg, rule{kind: ruleValOffset, off: r.SLEB128() * c.dataAlign})
		case cfaRestoreExtended:
			if reg := r.ULEB128(); reg < numRegs {
				m.row.regs[reg] = m.initial.regs[reg]
			}
		case cfaUndefined:
			set(r.ULEB128(), rule{kind: ruleUndefined})
		case cfaSameValue:
			set(r.ULEB128(), rule{kind: ruleSameValue})
		case cfaRegister:
			reg := r.ULEB128()
			set(reg, rule{kind: ruleRegister, reg: r.ULEB128()})
		case cfaExpression, cfaValExpression:
			reg := r.ULEB128()
			expr := r.Bytes(r.ULEB128())
			k := ruleExpression
			if op == cfaValExpression {
				k = ruleValExpression
			}
			set(reg, rule{kind: k, expr: expr})
		case cfaRememberState:
			if len(m.saved) >= maxRememberDepth {
				return errRememberDepth
			}
			m.saved = append(m.saved, m.row)
		case cfaRestoreState:
			if len(m.saved) == 0 {
				return errors.New("DW_CFA_restore_state with nothing remembered")
			}
			m.row = m.saved[len(m.saved)-1]
			m.saved = m.saved[:len(m.saved)-1]
		case cfaDefCFA:
			m.row.cfaReg = r.ULEB128()
			m.row.cfaOff = int64(r.ULEB128())
			m.row.cfaIsExpr, m.row.cfaExpr = false, nil
		case cfaDefCFASF:
			m.row.cfaReg = r.ULEB128()
			m.row.cfaOff = r.SLEB128() * c.dataAlign
			m.row.cfaIsExpr, m.row.cfaExpr = false, nil
		case cfaDefCFARegister:
			m.row.cfaReg = r.ULEB128()
			m.row.cfaIsExpr, m.row.cfaExpr = false, nil
		case cfaDefCFAOffset:
			m.row.cfaOff = int64(r.ULEB128())
		case cfaDefCFAOffsetSF:
			m.row.cfaOff = r.SLEB128() * c.dataAlign
		case cfaDefCFAExpr:
			m.row.cfaExpr = r.Bytes(r.ULEB128())
			m.row.cfaIsExpr = true
		case cfaGNUArgsSize:
			r.ULEB128() // bytes of outgoing arguments pushed: only for landing pads
		default:
			return fmt.Errorf("unknown CFA opcode %#x at offset %d", op, r.Off()-1)
		}
	}
	if r.Err() != nil {
		return fmt.Errorf("CFA program: %w", r.Err())
	}
	return nil
}
