// Command gpu-node-agent checks (and with apply, prepares) the GPU node it runs on, through
// the host root mounted at --host-root, and prints one NodeReport as JSON on stdout.
//
//	gpu-node-agent check|plan|apply [--host-root /host] [--node NAME] [--restart-runtime]
//	               [--install-driver BRANCH] [--install-toolkit VERSION] [--package-repo URL]
//	gpu-node-agent reboot --boot-id ID
//
// The request is nodereport.AgentRequest: every flag can also be set from the environment
// (AGENT_HOST_ROOT, NODE_NAME, AGENT_RESTART_RUNTIME); the package repositories' key comes
// base64-encoded in AGENT_PACKAGE_KEY. Exit codes: 0 report printed (whatever it found),
// 2 bad usage, 1 the agent itself failed (a report with the error is still printed when
// possible). Host commands run in the host's namespaces (nsenter to PID 1).
package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"syscall"

	"github.com/kubectl-gpu/kubectl-gpu/common/hostconfig"
	"github.com/kubectl-gpu/kubectl-gpu/nodeimages/agent/nodeagent"
)

func main() {
	ctx, cancel := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := nodeagent.Main(ctx, os.Args[1:], os.Getenv, nsenterRunner{}, os.Stdout, os.Stderr)
	cancel()
	os.Exit(code)
}

// nsenterRunner runs commands in the host's mount, UTS, IPC, network and PID namespaces
// (the pod runs with hostPID, so PID 1 is the host's init).
type nsenterRunner struct{}

// Note: the commands really ran.
func (nsenterRunner) Note() string { return "" }

// Reader runs the host's own programs that only read (containerd's config loader) chrooted
// into the host root, as NVIDIA's toolkit runs the host's containerd: that needs
// CAP_SYS_CHROOT, which the read-only check pod has, not the host's namespaces.
func (nsenterRunner) Reader(root string) hostconfig.Runner { return chrootRunner{root: root} }

// chrootRunner runs a host program by its absolute path inside the host root.
type chrootRunner struct{ root string }

func (chrootRunner) Note() string { return "" }

func (c chrootRunner) Run(ctx context.Context, argv ...string) (string, error) {
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Chroot: c.root}
	cmd.Dir = "/"
	cmd.Env = []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}
	out, err := cmd.CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("%v (chrooted into %s): %w: %s", argv, c.root, err, out)
	}
	return string(out), nil
}

func (nsenterRunner) Run(ctx context.Context, argv ...string) (string, error) {
	cmd := exec.CommandContext(ctx, "nsenter", append([]string{"-t", "1", "-m", "-u", "-i", "-n", "-p", "--"}, argv...)...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("%v: %w: %s", argv, err, out)
	}
	return string(out), nil
}
