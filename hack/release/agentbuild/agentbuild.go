// Package agentbuild is the one recipe that builds the node agent (cgo, for go-nvml): used
// by `make agent` and `make image` (through hack/release/build-agent), the test harness and the
// simulated nodes, so every agent binary is built the same way.
package agentbuild

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"runtime"
)

// Pkg is the module path of the plugin's packages.
const Pkg = "github.com/kubectl-gpu/kubectl-gpu"

// Options of one build.
type Options struct {
	// Dir is the repository root (the module).
	Dir string
	Out string
	// Arch is the target architecture (default: this machine's); another one needs its
	// cross C compiler (Debian's gcc-aarch64-linux-gnu / gcc-x86-64-linux-gnu).
	Arch    string
	Version string
	Commit  string
	// Package is the main package to build (default: the shipped agent, ./nodeimages/agent;
	// the simulated hosts' agent is ./hack/testenv/simagent).
	Package string
}

// SimAgent is the package of the simulated hosts' agent.
const SimAgent = "./hack/testenv/simagent"

// CC is the C compiler that builds the agent (cgo) for linux/arch on this machine: gcc for
// its own architecture, Debian's cross compiler for the other one; "" when absent.
func CC(arch string) string {
	cc := "gcc"
	if arch != runtime.GOARCH {
		cc = map[string]string{"arm64": "aarch64-linux-gnu-gcc", "amd64": "x86_64-linux-gnu-gcc"}[arch]
	}
	if p, err := exec.LookPath(cc); cc != "" && err == nil {
		return p
	}
	return ""
}

// Build builds the agent.
func Build(ctx context.Context, o Options) error {
	arch := o.Arch
	if arch == "" {
		arch = runtime.GOARCH
	}
	cc := CC(arch)
	if cc == "" {
		return fmt.Errorf("build the node agent: no C compiler for linux/%s (Debian: gcc-aarch64-linux-gnu libc6-dev-arm64-cross)", arch)
	}
	ld := "-s -w"
	if o.Version != "" {
		ld += " -X " + Pkg + "/common/buildinfo.Version=" + o.Version
	}
	if o.Commit != "" {
		ld += " -X " + Pkg + "/common/buildinfo.Commit=" + o.Commit
	}
	pkg := o.Package
	if pkg == "" {
		pkg = "./nodeimages/agent"
	}
	cmd := exec.CommandContext(ctx, "go", "build", "-trimpath", "-ldflags", ld, "-o", o.Out, pkg)
	cmd.Dir = o.Dir
	cmd.Env = append(os.Environ(), "CGO_ENABLED=1", "CGO_CFLAGS=-Wno-deprecated-declarations", "GOOS=linux", "GOARCH="+arch, "CC="+cc)
	if b, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("build the node agent for linux/%s: %v\n%s", arch, err, b)
	}
	return nil
}
