// Command simagent is the node agent of simulated hosts (test environment): the shipped
// agent's code (nodeagent) on a fake host root, with host commands recorded and given
// their effect on the root's kernel state by hostconfigtest.SimHost instead of run in the host's
// namespaces. The shipped gpu-node-agent has no such mode.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"github.com/kubectl-gpu/kubectl-gpu/common/hostconfig/hostconfigtest"
	rep "github.com/kubectl-gpu/kubectl-gpu/common/nodereport"
	"github.com/kubectl-gpu/kubectl-gpu/nodeimages/agent/nodeagent"
)

func main() {
	ctx, cancel := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	root := rep.DefaultHostRoot
	if req, err := rep.ParseAgentRequest(os.Args[1:], os.Getenv, nil); err == nil {
		root = req.HostRoot
	}
	code := nodeagent.Main(ctx, os.Args[1:], os.Getenv, &hostconfigtest.SimHost{Root: root}, os.Stdout, os.Stderr)
	cancel()
	os.Exit(code)
}
