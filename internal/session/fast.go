package session

import (
	"errors"
	"fmt"

	"github.com/memtrap/memtrap/internal/report"
	"github.com/memtrap/memtrap/pkg/fastwatch"
	"github.com/memtrap/memtrap/pkg/guard"
	"github.com/memtrap/memtrap/pkg/pagewatch"
	"github.com/memtrap/memtrap/pkg/tracer"
)

// runFast watches regions of the launched target with the fast engine
// (t its thread at the entry point): the agent completes the writes in the
// target, memtrap reports them from its records until the target ends.
func (se *session) runFast(t *tracer.Thread, regions []*pagewatch.Region) (report.Summary, error) {
	if len(se.pending) > 0 {
		return report.Summary{}, usageError(fmt.Sprintf("--engine fast: symbol %s is not in the program (a library loaded later is watched by the page engine only)", se.pending[0].Symbol))
	}
	o := fastwatch.Options{
		Report: se.onReport,
		Width:  se.opts.Width,
		Notify: func(m string) { _ = se.rep.Note(m) },
		Idle:   func() { _ = se.rep.Flush() },
		// The calls that write into watched memory, bounced.
		KernelWrites: se.opts.KernelWrites,
		OnUnmap:      func(r *pagewatch.Region, how string) { _ = se.rep.Unmapped(reportRegion(r), how) },
	}
	if se.needsWhen() {
		o.When = se.when
	}
	fw, err := fastwatch.New(se.p, t, regions, o)
	if errors.Is(err, fastwatch.ErrTooMany) && se.opts.Engine == fastwatch.Engine {
		return report.Summary{}, usageError(err.Error())
	}
	if err != nil {
		return report.Summary{}, err
	}
	se.fw = fw
	if err := se.rep.Start(se.p.Pid, fastwatch.Engine, reportRegions(regions)); err != nil {
		return report.Summary{}, err
	}
	// The filter that hides the agent's handler stays with children
	// the target leaves running: someone must answer its calls.
	if err := guard.StartKeeper(fw.Listener(), fw.ListenerLedger()); err != nil {
		_ = se.rep.Note(fmt.Sprintf("%v: children of the target left running when memtrap ends will see ENOSYS from rt_sigaction(SIGSEGV)", err))
	}
	ws, err := fw.Run()
	if err != nil {
		return report.Summary{}, err
	}
	if se.hit != nil {
		_ = se.rep.Note(fmt.Sprintf("%d write%s reported (--max-writes): not watching any more; process %d ran on with memtrap's agent idle", se.kept, plural(se.kept), se.p.Pid))
	}
	s := report.Summary{Writes: fw.Stats().Writes, Faults: fw.Stats().Faults}
	if ws.Signaled() {
		s.Signaled, s.Signal = true, int(ws.Signal())
	} else {
		s.Code = ws.ExitStatus()
	}
	return s, nil
}
