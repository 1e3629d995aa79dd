package session

import (
	"os"
	"testing"

	"github.com/memtrap/memtrap/pkg/guard"
)

// TestMain runs this test binary as the keeper of a syscall filter when a
// session under test starts one (guard.StartKeeper runs its own
// executable, as memtrap's main does): without this, the keeper would run
// the tests again, each starting keepers of its own.
func TestMain(m *testing.M) {
	if len(os.Args) > 1 && os.Args[1] == guard.KeeperCommand {
		os.Exit(guard.KeeperMain(os.Args[2:], os.Stderr))
	}
	os.Exit(m.Run())
}
