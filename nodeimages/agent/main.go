// Command gpu-node-agent checks (and with apply, prepares) the GPU node it runs on, through
// the host root mounted at --host-root, and prints one NodeReport as JSON on stdout.
//
//	gpu-node-agent check|plan|apply [--host-root /host] [--node NAME] [--restart-runtime]
//	               [--install-driver BRANCH] [--install-toolkit VERSION] [--package-repo URL]
//	gpu-node-agent reboot --boot-id ID
//
// Every flag can also be set from the environment (AGENT_HOST_ROOT, NODE_NAME,
// AGENT_RESTART_RUNTIME); the package repositories' key comes base64-encoded in
// AGENT_PACKAGE_KEY. Exit codes: 0 report printed (whatever it found), 2 bad usage,
// 1 the agent itself failed (a report with the error is still printed when possible).
package main

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"runtime"
	"strconv"
	"syscall"
	"time"

	"github.com/kubectl-gpu/kubectl-gpu/common/buildinfo"
	"github.com/kubectl-gpu/kubectl-gpu/common/hostconfig"
	rep "github.com/kubectl-gpu/kubectl-gpu/common/nodereport"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func envBool(k string) bool {
	b, _ := strconv.ParseBool(os.Getenv(k))
	return b
}

func envOr(k, def string) string {
	if v := os.Getenv(k); v != "" {
		return v
	}
	return def
}

func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprintln(stderr, "usage: gpu-node-agent check|plan|apply|reboot [--host-root DIR] [--node NAME] [--restart-runtime] [--install-driver BRANCH] [--install-toolkit VERSION] [--package-repo URL] [--boot-id ID]")
		return 2
	}
	mode := args[0]
	fs := flag.NewFlagSet("gpu-node-agent", flag.ContinueOnError)
	fs.SetOutput(stderr)
	root := fs.String("host-root", envOr("AGENT_HOST_ROOT", "/host"), "where the host's / is mounted")
	node := fs.String("node", os.Getenv("NODE_NAME"), "node name to put in the report")
	restart := fs.Bool("restart-runtime", envBool("AGENT_RESTART_RUNTIME"), "restart containerd / rke2 / k3s after changing its config")
	var inst hostconfig.Install
	fs.StringVar(&inst.DriverBranch, "install-driver", "", "install this NVIDIA driver branch with the host's package manager")
	fs.StringVar(&inst.ToolkitVersion, "install-toolkit", "", "install this NVIDIA Container Toolkit version (or latest)")
	fs.StringVar(&inst.Repo, "package-repo", "", "mirror of NVIDIA's package repositories (NVIDIA's paths kept)")
	fs.DurationVar(&inst.LockTimeout, "lock-timeout", 5*time.Minute, "how long to wait for a package manager held by another process")
	bootID := fs.String("boot-id", "", "reboot: the boot to reboot (a host booted since is left alone)")
	if err := fs.Parse(args[1:]); err != nil {
		return 2
	}
	if k := os.Getenv("AGENT_PACKAGE_KEY"); k != "" {
		b, err := base64.StdEncoding.DecodeString(k)
		if err != nil {
			fmt.Fprintln(stderr, "gpu-node-agent: AGENT_PACKAGE_KEY is not base64:", err)
			return 2
		}
		inst.Key = b
	}
	if err := hostconfig.ValidateInstall(inst); err != nil {
		fmt.Fprintln(stderr, "gpu-node-agent:", err)
		return 2
	}
	ctx, cancel := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer cancel()
	h := &hostconfig.Host{Root: *root}
	r, err := hostconfig.Run(ctx, h, hostconfig.Options{
		Mode: rep.Mode(mode), AgentVersion: buildinfo.Version, Node: *node, Arch: runtime.GOARCH,
		Apply:   hostconfig.ApplyOptions{RestartRuntime: *restart},
		Install: inst,
		BootID:  *bootID,
		NVML:    nvmlInfo(h, newNVML),
		Runner:  runner(),
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

// runner enters the host's namespaces; AGENT_RUNNER=record records the commands instead of
// running them (for test hosts that are not a node of their own).
func runner() hostconfig.Runner {
	if os.Getenv("AGENT_RUNNER") == "record" {
		return &hostconfig.Recorder{}
	}
	return nsenterRunner{}
}

// nsenterRunner runs commands in the host's mount, UTS, IPC, network and PID namespaces
// (the pod runs with hostPID, so PID 1 is the host's init).
type nsenterRunner struct{}

// Note: the commands really ran.
func (nsenterRunner) Note() string { return "" }

func (nsenterRunner) Run(ctx context.Context, argv ...string) (string, error) {
	cmd := exec.CommandContext(ctx, "nsenter", append([]string{"-t", "1", "-m", "-u", "-i", "-n", "-p", "--"}, argv...)...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("%v: %w: %s", argv, err, out)
	}
	return string(out), nil
}
