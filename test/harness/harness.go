// Package harness is what the end-to-end tests and benchmarks share: the plugin binary
// built once, the local cluster started once per test binary, and running the binary as a
// user would — `kubectl gpu …` found by kubectl's plugin lookup on PATH.
package harness

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"syscall"
	"testing"
	"time"

	"github.com/kubectl-gpu/kubectl-gpu/hack/release/agentbuild"
	"github.com/kubectl-gpu/kubectl-gpu/test/procmem"

	"github.com/kubectl-gpu/kubectl-gpu/hack/testenv/localcluster"
)

// Env is a started cluster with the plugin on PATH.
type Env struct {
	Cluster *localcluster.Cluster
	// BinDir holds kubectl-gpu; it is put first on PATH for Run.
	BinDir string
	// Kubectl is the kubectl binary used for plugin lookup.
	KubectlPath string
}

// RepoRoot is the module's root directory.
func RepoRoot() string { return localcluster.RepoRoot() }

// Main is TestMain for packages that need a cluster: it builds the plugin, starts the
// cluster with nodes, runs the tests, stops everything and checks that no process of the
// cluster is left. When the cluster binaries are missing the tests are skipped with one
// line, or fail when KGPU_REQUIRE_E2E=1 (as `make test` sets).
func Main(m *testing.M, env **Env, nodes ...localcluster.NodeSpec) int {
	return MainWith(m, env, func(ctx context.Context, e *Env) (string, error) {
		if len(nodes) == 0 {
			return "", nil
		}
		if _, err := e.Cluster.AddNodes(ctx, nodes...); err != nil {
			return "", fmt.Errorf("add nodes: %w", err)
		}
		return "", nil
	})
}

// MainWith is Main with the package's own set-up once the cluster runs. A set-up that
// returns a reason to skip makes every test of the package skip with that one line.
func MainWith(m *testing.M, env **Env, setup func(context.Context, *Env) (skip string, err error)) int {
	flag.Parse()
	kubectl, err := exec.LookPath("kubectl")
	if err != nil {
		return skipOrFail("kubectl is not on PATH (apt-get install kubernetes-client)")
	}
	bin, err := os.MkdirTemp("", "kubectl-gpu-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(bin)
	if err := BuildPlugin(filepath.Join(bin, "kubectl-gpu")); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	var logw *os.File
	if testing.Verbose() {
		logw = os.Stderr
	}
	c, err := localcluster.Start(ctx, localcluster.Options{Log: logw})
	if errors.Is(err, localcluster.ErrNoBinaries) {
		return skipOrFail(err.Error())
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "start local cluster:", err)
		return 1
	}
	var pids []int
	code := func() int {
		defer func() {
			pids = c.PIDs() // after any restart in the tests
			c.Stop()
		}()
		e := &Env{Cluster: c, BinDir: bin, KubectlPath: kubectl}
		skip, err := setup(ctx, e)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		if skip != "" {
			fmt.Fprintf(os.Stderr, "SKIP: %s\n", skip)
		} else {
			*env = e
		}
		code := m.Run()
		if code != 0 && c.Dir != "" {
			// Keep what the cluster's processes logged for whoever reads the failure.
			os.Setenv("KGPU_KEEP_CLUSTER_DIR", "1")
			fmt.Fprintf(os.Stderr, "tests failed: the local cluster's logs are kept in %s\n", filepath.Join(c.Dir, "logs"))
		}
		return code
	}()
	for _, pid := range pids {
		if syscall.Kill(pid, 0) == nil {
			fmt.Fprintf(os.Stderr, "process %d of the local cluster is still running after Stop\n", pid)
			code = 1
		}
	}
	return code
}

func skipOrFail(why string) int {
	if os.Getenv("KGPU_REQUIRE_E2E") == "1" {
		fmt.Fprintf(os.Stderr, "end-to-end tests cannot run: %s\n", why)
		return 1
	}
	fmt.Fprintf(os.Stderr, "SKIP end-to-end tests: %s\n", why)
	return 0
}

// BuildPlugin builds the plugin binary the way a release does (CGO off).
func BuildPlugin(out string) error {
	cmd := exec.Command("go", "build", "-trimpath", "-o", out, "./plugins/kubectl-gpu")
	cmd.Dir = RepoRoot()
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if b, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("build kubectl-gpu: %v\n%s", err, b)
	}
	return nil
}

// Result is one command run.
type Result struct {
	Stdout, Stderr string
	Code           int
	// PeakRSSMiB is the process's peak resident memory (procmem.Run; kubectl execs the
	// plugin in its own place, so this is the plugin's).
	PeakRSSMiB float64
}

// Kubectl runs `kubectl ARGS…` with the cluster's kubeconfig and the plugin on PATH.
func (e *Env) Kubectl(ctx context.Context, env []string, args ...string) Result {
	cmd := e.Command(ctx, args...)
	cmd.Env = append(cmd.Env, env...)
	return run(cmd)
}

// Plugin runs the plugin binary itself (`kubectl-gpu ARGS…`, without kubectl's dispatch),
// as the Helm CLI is run: for timings against it.
func (e *Env) Plugin(ctx context.Context, env []string, args ...string) Result {
	cmd := e.Command(ctx, args...)
	cmd.Path, cmd.Args = filepath.Join(e.BinDir, "kubectl-gpu"), append([]string{"kubectl-gpu"}, args...)
	cmd.Env = append(cmd.Env, env...)
	return run(cmd)
}

func run(cmd *exec.Cmd) Result {
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	peakKiB, err := procmem.Run(cmd)
	r := Result{Stdout: out.String(), Stderr: errOut.String(), PeakRSSMiB: float64(peakKiB) / 1024}
	var ee *exec.ExitError
	switch {
	case errors.As(err, &ee):
		r.Code = ee.ExitCode()
	case err != nil:
		r.Code = -1
		r.Stderr += err.Error()
	}
	return r
}

// Command is `kubectl ARGS…` with the cluster's kubeconfig and the plugin on PATH, not
// started (for tests that signal it).
func (e *Env) Command(ctx context.Context, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, e.KubectlPath, args...)
	// KUBERNETES_SERVICE_HOST cleared: the plugin runs as outside a cluster even where the
	// tests run in a pod.
	cmd.Env = append(os.Environ(), "KUBECONFIG="+e.Cluster.Kubeconfig, "PATH="+e.BinDir+string(os.PathListSeparator)+os.Getenv("PATH"), "KUBERNETES_SERVICE_HOST=")
	return cmd
}

// Gpu runs `kubectl gpu ARGS…`.
func (e *Env) Gpu(ctx context.Context, args ...string) Result {
	return e.Kubectl(ctx, nil, append([]string{"gpu"}, args...)...)
}

// BuildAgent builds the node agent (cgo, for go-nvml) for this machine.
func BuildAgent(out string) error { return BuildAgentFor(out, runtime.GOARCH) }

// AgentCC is the C compiler that builds the agent for linux/arch ("" when absent).
func AgentCC(arch string) string { return agentbuild.CC(arch) }

// BuildAgentFor builds the node agent for linux/arch with the one recipe (hack/release/agentbuild).
// BuildSimAgent builds the simulated hosts' agent (hack/testenv/simagent) for this machine: the
// agent's code with host commands recorded and given their effect on a fake host root.
func BuildSimAgent(out string) error {
	return agentbuild.Build(context.Background(), agentbuild.Options{Dir: RepoRoot(), Out: out, Version: "v0.0.0-test", Package: agentbuild.SimAgent})
}

func BuildAgentFor(out, arch string) error {
	return agentbuild.Build(context.Background(), agentbuild.Options{Dir: RepoRoot(), Out: out, Arch: arch, Version: "v0.0.0-test"})
}
