package session

import (
	"fmt"
	"strings"

	"github.com/memtrap/memtrap/internal/report"
	"github.com/memtrap/memtrap/pkg/guard"
	"github.com/memtrap/memtrap/pkg/pagewatch"
	"github.com/memtrap/memtrap/pkg/tracer"
)

// Attach watches the running process pid until it exits, or until
// SIGINT, SIGTERM or SIGHUP make memtrap give every page its protection
// back and detach from every thread; the target runs on. A failure before
// the watch runs detaches too. code is 0 after a detach, else what a shell
// would report for the target's end (128+N if signal N killed it).
func Attach(opts Options, pid int) (code int, err error) {
	se := newSession(opts)
	se.attached = true
	wopts := se.watchOptions()
	end := se.begin()
	defer end()
	var sum report.Summary
	err = tracer.Locked(func() error {
		p, err := tracer.Attach(pid)
		if err != nil {
			return err
		}
		se.setProcess(p)
		defer se.close()
		// The guardian: if memtrap dies while the target is armed, it
		// gives back what is armed (package guard).
		g, gerr := guard.Start(pid)
		if gerr == nil {
			defer g.Close()
		}
		sum, err = se.attachWatch(wopts, g, gerr)
		if err == nil {
			se.prepareEnd(sum)
			if se.hit != nil && se.opts.OnHit == "stop" {
				se.stopped = se.stoppedLine()
			}
		}
		return err
	})
	if err != nil {
		return 0, err
	}
	se.notePending()
	if se.hit != nil {
		if se.opts.OnHit == "stop" {
			_ = se.rep.Note(se.stopped)
		} else {
			_ = se.rep.Note(fmt.Sprintf("%d write%s reported (--max-writes): detached; process %d runs on untraced", se.kept, plural(se.kept), pid))
		}
	}
	if err := se.finishReport(sum); err != nil {
		return 0, err
	}
	if sum.Detached {
		return 0, nil
	}
	return exitCode(sum), nil
}

func (se *session) attachWatch(wopts pagewatch.Options, g *guard.Link, gerr error) (report.Summary, error) {
	p := se.p
	threads := p.Threads()
	if len(threads) == 0 {
		return report.Summary{}, fmt.Errorf("process %d has no threads left", p.Pid)
	}
	t := threads[0]
	letGo := func(w *pagewatch.Watch) {
		if w != nil {
			_ = w.Disarm(t)
		}
		_ = p.Detach()
	}
	regions, err := se.resolve()
	if err == nil {
		err = se.checkWhen(regions)
	}
	if err != nil {
		letGo(nil)
		return report.Summary{}, err
	}
	w, err := pagewatch.New(p, regions, wopts)
	if err != nil {
		letGo(nil)
		return report.Summary{}, err
	}
	se.w = w
	if g != nil {
		w.SetGuard(g.Update)
		p.SetThreadLog(g.ThreadLog())
	}
	if err := w.Arm(t); err != nil {
		letGo(w)
		return report.Summary{}, err
	}
	if err := se.watchPending(w); err != nil {
		letGo(w)
		return report.Summary{}, err
	}
	// After the arming, which knows how to make calls in a target that
	// ignores SIGTRAP (a step's trap would reset its action).
	if err := se.codePage(w, t); err != nil {
		letGo(w)
		return report.Summary{}, err
	}
	hookLines, err := se.hook(w, t)
	if err != nil {
		letGo(w)
		return report.Summary{}, err
	}
	if err := se.rep.Start(p.Pid, w.Engine(), reportRegions(regions)); err != nil {
		letGo(w)
		return report.Summary{}, err
	}
	if gerr != nil {
		_ = se.rep.Note(fmt.Sprintf("%v; if memtrap is killed, the target may die of what memtrap leaves armed", gerr))
	}
	for _, l := range hookLines {
		if strings.HasPrefix(l, "watching heap") {
			l += "; blocks allocated before the attach are not known"
		}
		_ = se.rep.Note(fmt.Sprintf("%s, in process %d (engine %s)", l, p.Pid, w.Engine()))
	}
	go func() {
		for range se.sigs {
			w.RequestDetach()
		}
	}()
	w.SyncGuard() // the breakpoints
	if err := p.ResumeAll(); err != nil {
		return report.Summary{}, err
	}
	st, err := w.Run()
	if err != nil {
		// The target must not pay for memtrap's failure: every thread
		// stopped, what was armed given back, then let go.
		if serr := p.StopOthers(nil); serr == nil {
			if ths := p.Threads(); len(ths) > 0 {
				t = ths[0]
			}
			// As a requested detach does: stops still queued (a
			// breakpoint hit, a signal) are settled first.
			if derr := w.Detach(tracer.Stop{Kind: tracer.StopWake, Thread: t}); derr != nil {
				letGo(w)
			}
		}
		return report.Summary{}, err
	}
	return summary(w, st), nil
}
