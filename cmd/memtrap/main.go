// Command memtrap reports who writes to a region of a process's memory, when,
// and with what value. See README.md.
package main

import (
	"os"
)

func main() {
	os.Exit(Main(os.Args[1:], os.Stdin, os.Stdout, os.Stderr))
}
