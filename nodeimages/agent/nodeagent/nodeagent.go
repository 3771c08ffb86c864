// Package nodeagent is the node agent as a library call: Run carries out one AgentRequest
// on the host mounted at its host root, with host commands through the Runner it is given
// (the shipped agent's enters the host's namespaces; simulated hosts supply their own), and
// prints one NodeReport.
package nodeagent

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"runtime"

	"github.com/kubectl-gpu/kubectl-gpu/common/buildinfo"
	"github.com/kubectl-gpu/kubectl-gpu/common/hostconfig"
	rep "github.com/kubectl-gpu/kubectl-gpu/common/nodereport"
)

// Main parses the agent's argv and environment and runs it: the whole agent but the choice
// of runner. It returns the exit code (see Run).
func Main(ctx context.Context, args []string, getenv func(string) string, runner hostconfig.Runner, stdout, stderr io.Writer) int {
	req, err := rep.ParseAgentRequest(args, getenv, stderr)
	if err != nil {
		fmt.Fprintln(stderr, "gpu-node-agent:", err)
		return 2
	}
	return Run(ctx, req, runner, stdout, stderr)
}

// Run carries out req and prints its report as JSON on stdout. Exit codes: 0 the report is
// printed (whatever it found), 2 a request it cannot carry out, 1 the agent itself failed (a
// report with the error is still printed when possible).
func Run(ctx context.Context, req rep.AgentRequest, runner hostconfig.Runner, stdout, stderr io.Writer) int {
	inst := hostconfig.Install{DriverBranch: req.DriverBranch, ToolkitVersion: req.ToolkitVersion, Repo: req.PackageRepo, Key: req.PackageKey, LockTimeout: req.LockTimeout}
	if err := hostconfig.ValidateInstall(inst); err != nil {
		fmt.Fprintln(stderr, "gpu-node-agent:", err)
		return 2
	}
	h := &hostconfig.Host{Root: req.HostRoot}
	r, err := hostconfig.Run(ctx, h, hostconfig.Options{
		Mode: req.Mode, AgentVersion: buildinfo.Version, Node: req.Node, Arch: runtime.GOARCH,
		Apply:   hostconfig.ApplyOptions{RestartRuntime: req.RestartRuntime},
		Install: inst,
		BootID:  req.BootID,
		NVML:    nvmlInfo(h, newNVML),
		Runner:  runner,
	})
	if r != nil {
		b, jerr := json.Marshal(r)
		if jerr != nil {
			fmt.Fprintln(stderr, "gpu-node-agent:", jerr)
			return 1
		}
		fmt.Fprintf(stdout, "%s\n", b)
	}
	if err != nil {
		fmt.Fprintln(stderr, "gpu-node-agent:", err)
		if r == nil {
			return 2
		}
		return 1
	}
	return 0
}
