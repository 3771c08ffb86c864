package nodereport

import (
	"encoding/base64"
	"errors"
	"flag"
	"fmt"
	"io"
	"strconv"
	"time"
)

// AgentRequest is what the plugin asks of the node agent, the one contract of both sides:
// the plugin builds the agent's argv and environment with Args and Env, the agent reads
// them back with ParseAgentRequest. Every flag can also come from the environment.
type AgentRequest struct {
	Mode Mode
	// HostRoot is where the host's / is mounted (AGENT_HOST_ROOT; default /host).
	HostRoot string
	// Node is the node's name for the report (NODE_NAME: the Job sets it from the pod's
	// spec.nodeName).
	Node string
	// RestartRuntime restarts containerd / rke2 / k3s after its config changed
	// (AGENT_RESTART_RUNTIME).
	RestartRuntime bool
	// DriverBranch, ToolkitVersion, PackageRepo, PackageKey and LockTimeout are the host
	// package installs (see pkginstall.Install); the key travels base64-encoded in
	// AGENT_PACKAGE_KEY (a key does not fit an argument well).
	DriverBranch   string
	ToolkitVersion string
	PackageRepo    string
	PackageKey     []byte
	LockTimeout    time.Duration
	// BootID, in reboot mode, is the boot to reboot: a host booted since is left alone.
	BootID string
}

// Environment variables of the agent.
const (
	EnvHostRoot       = "AGENT_HOST_ROOT"
	EnvNode           = "NODE_NAME"
	EnvRestartRuntime = "AGENT_RESTART_RUNTIME"
	EnvPackageKey     = "AGENT_PACKAGE_KEY"
)

// DefaultHostRoot is where the Job mounts the host's /.
const DefaultHostRoot = "/host"

// DefaultLockTimeout is how long the agent waits for a package manager held by another
// process unless told.
const DefaultLockTimeout = 5 * time.Minute

// AgentUsage is the agent's usage line.
const AgentUsage = "usage: gpu-node-agent check|plan|apply|reboot [--host-root DIR] [--node NAME] [--restart-runtime] [--install-driver BRANCH] [--install-toolkit VERSION] [--package-repo URL] [--lock-timeout D] [--boot-id ID]"

// Args is the agent's argv (after the program name): the mode, then the flags that differ
// from their defaults. Node and the package key go in the environment (Env).
func (r AgentRequest) Args() []string {
	args := []string{string(r.Mode)}
	if r.HostRoot != "" && r.HostRoot != DefaultHostRoot {
		args = append(args, "--host-root", r.HostRoot)
	}
	if r.RestartRuntime {
		args = append(args, "--restart-runtime")
	}
	for _, a := range [][2]string{{"--install-driver", r.DriverBranch}, {"--install-toolkit", r.ToolkitVersion}, {"--package-repo", r.PackageRepo}, {"--boot-id", r.BootID}} {
		if a[1] != "" {
			args = append(args, a[0], a[1])
		}
	}
	if r.LockTimeout > 0 && r.LockTimeout != DefaultLockTimeout {
		args = append(args, "--lock-timeout", r.LockTimeout.String())
	}
	return args
}

// Env is the agent's environment besides NODE_NAME (which the Job takes from the pod's
// spec), as name-value pairs in a fixed order.
func (r AgentRequest) Env() [][2]string {
	var env [][2]string
	if len(r.PackageKey) > 0 {
		env = append(env, [2]string{EnvPackageKey, base64.StdEncoding.EncodeToString(r.PackageKey)})
	}
	return env
}

// ErrAgentUsage is a request the agent cannot read (exit 2).
var ErrAgentUsage = errors.New("bad usage")

// ParseAgentRequest reads the agent's argv (after the program name) and environment. Flag
// errors are written to usage (nil: discarded) and wrap ErrAgentUsage.
func ParseAgentRequest(args []string, getenv func(string) string, usage io.Writer) (AgentRequest, error) {
	if usage == nil {
		usage = io.Discard
	}
	if len(args) == 0 {
		return AgentRequest{}, fmt.Errorf("%w: %s", ErrAgentUsage, AgentUsage)
	}
	r := AgentRequest{Mode: Mode(args[0])}
	or := func(k, def string) string {
		if v := getenv(k); v != "" {
			return v
		}
		return def
	}
	restart, _ := strconv.ParseBool(getenv(EnvRestartRuntime))
	fs := flag.NewFlagSet("gpu-node-agent", flag.ContinueOnError)
	fs.SetOutput(usage)
	fs.StringVar(&r.HostRoot, "host-root", or(EnvHostRoot, DefaultHostRoot), "where the host's / is mounted")
	fs.StringVar(&r.Node, "node", getenv(EnvNode), "node name to put in the report")
	fs.BoolVar(&r.RestartRuntime, "restart-runtime", restart, "restart containerd / rke2 / k3s after changing its config")
	fs.StringVar(&r.DriverBranch, "install-driver", "", "install this NVIDIA driver branch with the host's package manager")
	fs.StringVar(&r.ToolkitVersion, "install-toolkit", "", "install this NVIDIA Container Toolkit version (or latest)")
	fs.StringVar(&r.PackageRepo, "package-repo", "", "mirror of NVIDIA's package repositories (NVIDIA's paths kept)")
	fs.DurationVar(&r.LockTimeout, "lock-timeout", DefaultLockTimeout, "how long to wait for a package manager held by another process")
	fs.StringVar(&r.BootID, "boot-id", "", "reboot: the boot to reboot (a host booted since is left alone)")
	if err := fs.Parse(args[1:]); err != nil {
		return AgentRequest{}, fmt.Errorf("%w: %v", ErrAgentUsage, err)
	}
	if fs.NArg() > 0 {
		return AgentRequest{}, fmt.Errorf("%w: unexpected argument %q", ErrAgentUsage, fs.Arg(0))
	}
	if k := getenv(EnvPackageKey); k != "" {
		b, err := base64.StdEncoding.DecodeString(k)
		if err != nil {
			return AgentRequest{}, fmt.Errorf("%w: %s is not base64: %v", ErrAgentUsage, EnvPackageKey, err)
		}
		r.PackageKey = b
	}
	return r, nil
}
