// Package report writes what a watch saw, one event per line: text for
// people, or JSON Lines for tools (schema version 1, documented in
// README.md: a key changes meaning or goes only with a new version).
//
// The report has its own event types ([Write], [Region], [Frame],
// [Summary]): plain values copied out of the engine, with no registers,
// threads or process handles, so that nothing a writer holds can reach
// back into a stopped target, and a test can build any event by hand.
//
// # Lifetime
//
// [New] makes one [Reporter] per session, over a stream the caller owns
// (and closes after the last Flush). Write events are buffered: a write(2)
// per trapped write would cost the stopped writer more than the rest of
// its report. They reach the stream at Flush, before any other event
// (Start, Note, Unmapped and End flush), or when the buffer fills.
//
// # Concurrency
//
// A Reporter is not safe for concurrent use. The session calls it from its
// ptrace thread while the target runs, and once more (End) after that
// thread is done.
//
// # The JSON fast path
//
// A write event's line is built by hand: through encoding/json's
// reflection it cost about 8 us per write with a backtrace, on the write
// path. The tests hold it byte for byte to what encoding/json makes.
package report
