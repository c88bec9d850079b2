package cli

import (
	"fmt"
	"regexp"
	"strings"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
)

// placeholder is a backquoted value name pflag should show on purpose:
// one upper-case word, such as `DIR`.
var placeholder = regexp.MustCompile("^[A-Z][A-Z0-9_:|.-]*$")

// Lint returns what is wrong in the help of root's command tree: a
// command without an Example (cobra's own help and completion commands
// need none), a flag usage with
// a backquoted text that pflag would show as the flag's value name
// (pflag.UnquoteUsage takes the first `...` in a usage for it), and a
// usage that says its default where pflag prints it too.
func Lint(root *cobra.Command) []string {
	var problems []string
	root.InitDefaultHelpCmd()
	root.InitDefaultCompletionCmd()
	Walk(root, func(c *cobra.Command) {
		path := c.CommandPath()
		own := c.Name() != "help" && !strings.HasPrefix(path, root.Name()+" completion") &&
			c.Name() != cobra.ShellCompRequestCmd && c.Name() != cobra.ShellCompNoDescRequestCmd
		if own && c.Example == "" {
			problems = append(problems, fmt.Sprintf("%s: no Example", path))
		}
		check := func(f *pflag.Flag) {
			if i := strings.IndexByte(f.Usage, '`'); i >= 0 {
				if j := strings.IndexByte(f.Usage[i+1:], '`'); j >= 0 && !placeholder.MatchString(f.Usage[i+1:i+1+j]) {
					name, _ := pflag.UnquoteUsage(f)
					problems = append(problems, fmt.Sprintf("%s --%s: pflag shows %q as its value name: %q", path, f.Name, name, f.Usage))
				}
			}
			if !zeroDefault(f.DefValue) && strings.Contains(f.Usage, "(default") {
				problems = append(problems, fmt.Sprintf("%s --%s: the usage says its default, and pflag adds (default %s): %q", path, f.Name, f.DefValue, f.Usage))
			}
		}
		c.LocalNonPersistentFlags().VisitAll(check)
		c.PersistentFlags().VisitAll(check)
	})
	return problems
}

// zeroDefault reports whether pflag prints no "(default ...)" for a flag
// whose default is def.
func zeroDefault(def string) bool {
	switch def {
	case "", "0", "false", "[]", "0s", "<nil>":
		return true
	}
	return false
}
