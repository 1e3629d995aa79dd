package main

import (
	"fmt"

	"github.com/spf13/cobra"
)

// version is a var so that a release build can set it:
// go build -ldflags "-X main.version=1.2.3".
var version = "0.1.0-dev"

func newVersionCmd(s *Streams) *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print memtrap's version",
		Args:  cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error {
			fmt.Fprintf(s.Out, "memtrap %s\n", version)
			return nil
		},
	}
}
