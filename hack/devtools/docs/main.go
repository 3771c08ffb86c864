// Command docs writes the command reference (docs/commands/*.md) from the cobra tree.
//
//	go run ./hack/devtools/docs [DIR]
package main

import (
	"fmt"
	"os"

	"github.com/spf13/cobra"
	"github.com/spf13/cobra/doc"
	"k8s.io/cli-runtime/pkg/genericiooptions"

	"github.com/kubectl-gpu/kubectl-gpu/plugins/root"
)

func main() {
	dir := "docs/commands"
	if len(os.Args) > 1 {
		dir = os.Args[1]
	}
	if err := Generate(dir); err != nil {
		fmt.Fprintln(os.Stderr, "docs:", err)
		os.Exit(1)
	}
}

// Generate writes one markdown page per command into dir.
func Generate(dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	cmd := root.NewCmdRoot(genericiooptions.NewTestIOStreamsDiscard())
	noDates(cmd)
	return doc.GenMarkdownTree(cmd, dir)
}

// noDates drops cobra's "generated on DATE" footer so the pages only change with the code.
func noDates(c *cobra.Command) {
	c.DisableAutoGenTag = true
	for _, sub := range c.Commands() {
		noDates(sub)
	}
}
