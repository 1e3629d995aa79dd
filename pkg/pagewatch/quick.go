package pagewatch

import (
	"sort"

	"github.com/memtrap/memtrap/pkg/sysout"
	"github.com/memtrap/memtrap/pkg/tracer"
	"golang.org/x/sys/unix"
)

// The quick check (tracer.QuickCheck): a call the syscall filter stopped in
// a traced thread is decided on the listener's goroutine when it is one the
// watch would let run as it is, a read into memory far from anything
// watched above all (readv, recvmsg and kin stop whatever their buffers,
// which the filter cannot see). Such a call then costs no ptrace stop at
// all. It decides from a view of the watched memory published while the
// target is stopped (publishQuick), immutable, and always covering what is
// armed (every page of the page engine, armed now or not), and from the
// target's memory (an iovec, a msghdr).

// publishQuick gives the listener the watch's view as it is now.
// Precondition: the target is stopped (a call decided on the old view
// meanwhile has run before the change, or waits to be stopped).
func (w *Watch) publishQuick() {
	if !w.p.Notifying() {
		return
	}
	spans := w.eng.kernelSpans()
	sort.Slice(spans, func(i, j int) bool { return spans[i].lo < spans[j].lo })
	follows := w.followsWrites()
	w.p.SetQuickCheck(func(nr int, args *[6]uint64, mem tracer.MemReader) bool {
		return quickStops(nr, args, mem, spans, follows)
	})
}

// quickStops says whether the watch needs to see call nr (see the
// engines' syscallEntry: what they let run as it is runs here).
func quickStops(nr int, args *[6]uint64, mem sysout.Reader, spans []span, follows bool) bool {
	switch nr {
	case unix.SYS_SIGALTSTACK, unix.SYS_RT_SIGACTION, unix.SYS_IO_URING_SETUP, unix.SYS_IO_URING_ENTER, unix.SYS_PTRACE:
		return true // books to keep
	}
	if _, ok := memoryCalls[nr]; ok {
		// As the engines' memoryCall: only a change over watched
		// pages is theirs.
		lo, n := args[0], args[1]
		switch nr {
		case unix.SYS_MMAP:
			if args[3]&(unix.MAP_FIXED|unix.MAP_FIXED_NOREPLACE) == 0 {
				return false
			}
		case unix.SYS_MREMAP:
			if args[3]&unix.MREMAP_FIXED != 0 {
				end := max(args[0]+args[1], args[4]+args[2])
				lo = min(args[0], args[4])
				n = end - lo
			}
		}
		lo, hi := pageDown(lo), pageUp(lo+n)
		return hi < lo || touches(spans, lo, hi-lo)
	}
	if vs, ok := sysout.LookupVec(nr); ok {
		if !follows {
			return false
		}
		l, ok := vs.Read(args, mem)
		if !ok {
			return false
		}
		for _, o := range l.Outputs() {
			if touches(spans, o.Addr, o.Size) {
				return true
			}
		}
		return false
	}
	if spec, ok := sysout.Lookup(nr); ok {
		if !follows {
			return false
		}
		for _, o := range spec.Outputs(args, mem) {
			if o.Addr != 0 && touches(spans, o.Addr, o.Size) {
				return true
			}
		}
		return false
	}
	return true
}

// touches says whether [addr, addr+n) meets one of spans (sorted).
func touches(spans []span, addr, n uint64) bool {
	if n == 0 {
		return false
	}
	end := addr + n
	if end < addr {
		end = ^uint64(0)
	}
	i := sort.Search(len(spans), func(i int) bool { return spans[i].hi > addr })
	return i < len(spans) && spans[i].lo < end
}
