// Command memtrap reports who writes to a region of a process's memory, when,
// and with what value. See README.md.
package main

import (
	"os"

	"github.com/memtrap/memtrap/pkg/guard"
)

func main() {
	if len(os.Args) > 1 && os.Args[1] == guard.Command {
		// memtrap's own: the guardian of an attached target (attach).
		os.Exit(guard.Main(os.Args[2:], os.Stderr))
	}
	if len(os.Args) > 1 && os.Args[1] == guard.KeeperCommand {
		// memtrap's own: the keeper of a launched target's syscall
		// filter, once memtrap is gone.
		os.Exit(guard.KeeperMain(os.Args[2:], os.Stderr))
	}
	os.Exit(Main(os.Args[1:], os.Stdin, os.Stdout, os.Stderr))
}
