# cfi.s: functions with CFI that compilers do not emit, for pkg/unwind's
# tests of how the unwinder reacts to it. They are never run: the tests
# pretend a thread stopped in them, with a stack they make up.

	.text

# selfloop's CFA is rsp itself: unwinding it does not move up the stack.
	.globl	selfloop
	.type	selfloop, @function
selfloop:
	.cfi_startproc
	.cfi_def_cfa %rsp, 0
	nop
	nop
	ret
	.cfi_endproc
	.size	selfloop, .-selfloop

# outermost has no caller: its return address column is undefined.
	.globl	outermost
	.type	outermost, @function
outermost:
	.cfi_startproc
	.cfi_undefined %rip
	nop
	ret
	.cfi_endproc
	.size	outermost, .-outermost

# badcfi's FDE holds an opcode that does not exist.
	.globl	badcfi
	.type	badcfi, @function
badcfi:
	.cfi_startproc
	.cfi_escape 0x3f
	nop
	ret
	.cfi_endproc
	.size	badcfi, .-badcfi

# pltlike is laid out as a PLT, 16-byte entries, with the CFA expression
# GNU ld writes for them: rsp+8, plus 8 once the entry's push has run.
	.p2align 4
	.globl	pltlike
	.type	pltlike, @function
pltlike:
	.cfi_startproc
	.cfi_escape 0x0f, 0x0b, 0x77, 0x08, 0x80, 0x00, 0x3f, 0x1a, 0x3b, 0x2a, 0x33, 0x24, 0x22
	.rept 2
	jmp	*0(%rip)		# 6 bytes
	.byte	0x68; .long 0		# pushq $0, 5 bytes
	.byte	0xe9; .long 0		# jmp rel32, 5 bytes
	.endr
	.cfi_endproc
	.size	pltlike, .-pltlike

# sigtramp_like is a signal frame ('S'), its FDE starting one byte early as
# glibc's __restore_rt's does. after_signal follows it directly, so looking
# up after_signal's first byte minus one would find sigtramp_like's rules.
	.p2align 4
	.cfi_startproc
	.cfi_signal_frame
	nop
	.globl	sigtramp_like
	.type	sigtramp_like, @function
sigtramp_like:
	nop
	ret
	.cfi_endproc
	.size	sigtramp_like, .-sigtramp_like

	.globl	after_signal
	.type	after_signal, @function
after_signal:
	.cfi_startproc
	.cfi_def_cfa_offset 24
	nop
	ret
	.cfi_endproc
	.size	after_signal, .-after_signal

# regrule keeps its return address in a register and its caller's rbx as
# CFA-16 (val_offset), and rbp in r12.
	.globl	regrule
	.type	regrule, @function
regrule:
	.cfi_startproc
	.cfi_register %rip, %r11
	.cfi_val_offset %rbx, -16
	.cfi_register %rbp, %r12
	nop
	ret
	.cfi_endproc
	.size	regrule, .-regrule
