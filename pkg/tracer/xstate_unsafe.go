package tracer

import (
	"unsafe"

	"golang.org/x/sys/unix"
)

// The pointers are converted in the Syscall6 call expressions themselves,
// which keeps the buffers alive and in place for the call.

func ptraceGetFPRegs(tid int, out *[512]byte) error {
	_, _, e := unix.Syscall6(unix.SYS_PTRACE, unix.PTRACE_GETFPREGS, uintptr(tid), 0, uintptr(unsafe.Pointer(out)), 0, 0)
	if e != 0 {
		return e
	}
	return nil
}

// ptraceGetRegset reads regset typ into buf and returns how many bytes the
// kernel filled (it truncates to len(buf)).
func ptraceGetRegset(tid int, typ uintptr, buf []byte) (int, error) {
	iov := unix.Iovec{Base: unsafe.SliceData(buf)}
	iov.SetLen(len(buf))
	_, _, e := unix.Syscall6(unix.SYS_PTRACE, unix.PTRACE_GETREGSET, uintptr(tid), typ, uintptr(unsafe.Pointer(&iov)), 0, 0)
	if e != 0 {
		return 0, e
	}
	return int(iov.Len), nil
}

// ptraceSetRegset writes regset typ from buf.
func ptraceSetRegset(tid int, typ uintptr, buf []byte) error {
	iov := unix.Iovec{Base: unsafe.SliceData(buf)}
	iov.SetLen(len(buf))
	_, _, e := unix.Syscall6(unix.SYS_PTRACE, unix.PTRACE_SETREGSET, uintptr(tid), typ, uintptr(unsafe.Pointer(&iov)), 0, 0)
	if e != 0 {
		return e
	}
	return nil
}
