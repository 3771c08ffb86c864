// Command build-agent builds the node agent with the one recipe (hack/release/agentbuild):
//
//	go run ./hack/release/build-agent -out bin/gpu-node-agent [-arch arm64] [-version v1.2.3] [-commit abc]
package main

import (
	"context"
	"flag"
	"fmt"
	"os"

	"github.com/kubectl-gpu/kubectl-gpu/hack/release/agentbuild"
)

func main() {
	var o agentbuild.Options
	flag.StringVar(&o.Out, "out", "bin/gpu-node-agent", "output file")
	flag.StringVar(&o.Arch, "arch", "", "target architecture (default: this machine's)")
	flag.StringVar(&o.Version, "version", "", "version to stamp")
	flag.StringVar(&o.Commit, "commit", "", "commit to stamp")
	flag.Parse()
	o.Dir = "."
	if err := agentbuild.Build(context.Background(), o); err != nil {
		fmt.Fprintln(os.Stderr, "build-agent:", err)
		os.Exit(1)
	}
}
