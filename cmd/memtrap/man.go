package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
)

// newManCmd writes man pages for memtrap and each verb, from the commands
// themselves (their usage, descriptions, examples and flags), so that they
// never drift from --help. `make install` runs it; it is hidden from help.
func newManCmd(s *Streams) *cobra.Command {
	return &cobra.Command{
		Use:    "man DIR",
		Short:  "Write memtrap's man pages (section 1) into DIR",
		Args:   cobra.ExactArgs(1),
		Hidden: true,
		RunE: func(cmd *cobra.Command, args []string) error {
			return writeManPages(cmd.Root(), args[0])
		},
	}
}

// writeManPages writes memtrap.1 and memtrap-VERB.1 into dir.
func writeManPages(root *cobra.Command, dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("man pages: %v", err)
	}
	cmds := []*cobra.Command{root}
	for _, c := range root.Commands() {
		if c.IsAvailableCommand() {
			cmds = append(cmds, c)
		}
	}
	for _, c := range cmds {
		name := strings.ReplaceAll(c.CommandPath(), " ", "-")
		page := manPage(c, name, cmds)
		if err := os.WriteFile(filepath.Join(dir, name+".1"), []byte(page), 0o644); err != nil {
			return fmt.Errorf("man pages: %v", err)
		}
	}
	return nil
}

// roff escapes text for a man page: backslashes, and a leading dot or
// quote that roff would take for a request.
func roff(s string) string {
	s = strings.ReplaceAll(s, `\`, `\e`)
	s = strings.ReplaceAll(s, "-", `\-`)
	var b strings.Builder
	for _, l := range strings.Split(s, "\n") {
		if strings.HasPrefix(l, ".") || strings.HasPrefix(l, "'") {
			l = `\&` + l
		}
		b.WriteString(l)
		b.WriteByte('\n')
	}
	return strings.TrimSuffix(b.String(), "\n")
}

// argName is what a flag's value is called on the page.
func argName(typ string) string {
	switch typ {
	case "int", "uint64", "N":
		return "N"
	case "stringArray":
		return "SPEC"
	}
	return strings.ToUpper(typ)
}

func manPage(c *cobra.Command, name string, all []*cobra.Command) string {
	var b strings.Builder
	fmt.Fprintf(&b, ".TH %s 1 \"\" \"memtrap %s\" \"User Commands\"\n", strings.ToUpper(name), version)
	fmt.Fprintf(&b, ".SH NAME\n%s \\- %s\n", roff(name), roff(c.Short))
	fmt.Fprintf(&b, ".SH SYNOPSIS\n.B %s\n", roff(c.UseLine()))
	desc := c.Long
	if desc == "" {
		desc = c.Short
	}
	fmt.Fprintf(&b, ".SH DESCRIPTION\n%s\n", roff(desc))
	if c.HasAvailableFlags() {
		b.WriteString(".SH OPTIONS\n")
		c.Flags().VisitAll(func(f *pflag.Flag) {
			if f.Hidden {
				return
			}
			b.WriteString(".TP\n")
			flag := "\\fB\\-\\-" + roff(f.Name) + "\\fR"
			if f.Shorthand != "" {
				flag = "\\fB\\-" + f.Shorthand + "\\fR, " + flag
			}
			if t := f.Value.Type(); t != "bool" {
				flag += " \\fI" + roff(argName(t)) + "\\fR"
			}
			b.WriteString(flag + "\n" + roff(f.Usage))
			if f.DefValue != "" && f.DefValue != "[]" && f.DefValue != "false" && f.DefValue != "0" {
				fmt.Fprintf(&b, " (default %s)", roff(f.DefValue))
			}
			b.WriteString("\n")
		})
	}
	if c.Example != "" {
		fmt.Fprintf(&b, ".SH EXAMPLES\n.nf\n%s\n.fi\n", roff(c.Example))
	}
	b.WriteString(".SH SEE ALSO\n")
	var see []string
	for _, o := range all {
		if o != c {
			see = append(see, "\\fB"+roff(strings.ReplaceAll(o.CommandPath(), " ", "-"))+"\\fR(1)")
		}
	}
	b.WriteString(strings.Join(see, ", ") + ", \\fBgdb\\fR(1), \\fBptrace\\fR(2)\n")
	return b.String()
}
