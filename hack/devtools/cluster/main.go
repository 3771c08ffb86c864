// Command cluster runs the local test cluster (see package localcluster).
//
//	go run ./hack/devtools/cluster up  [--dir DIR] [--nodes SPEC] [--real-nodes N]   start and wait for Ctrl-C
//	go run ./hack/devtools/cluster run [--dir DIR] [--nodes SPEC] [--real-nodes N] -- CMD [ARG...]
//	                                                         start, run CMD with KUBECONFIG set, stop
//
// SPEC is "default" or a list such as "a100=2,rke2=1,cpu=1" (profile=count), or "none".
// --real-nodes adds nodes that run a real kubelet, containerd and runc with 2 fake GPUs
// each (root, Linux; see localcluster.AddRealNode). --simulate-agents (on by default) makes
// the simulated GPU nodes answer `kubectl gpu prep` and `verify` (see package simnodes).
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/kubectl-gpu/kubectl-gpu/hack/testenv/localcluster"
	"github.com/kubectl-gpu/kubectl-gpu/hack/testenv/simnodes"
)

func main() {
	localcluster.RealNodeProcess() // this binary is also the real node's init
	if len(os.Args) < 2 {
		usage()
	}
	verb := os.Args[1]
	fs := flag.NewFlagSet(verb, flag.ExitOnError)
	dir := fs.String("dir", "", "state directory (default: a temporary one, removed at the end)")
	nodes := fs.String("nodes", "default", `simulated nodes: "default" or profile=count,...`)
	workload := fs.Bool("workload", true, "run a few GPU pods so that nodes show GPUs in use")
	realNodes := fs.Int("real-nodes", 0, "real nodes (kubelet + containerd + runc, fake device plugin) to add")
	agents := fs.Bool("simulate-agents", true, "answer prep pods on the simulated GPU nodes with the real agent run on a fake host root, keep each node coherent with its host (GPUs advertised where a device plugin runs on a loaded driver; the GPU Operator's driver, device plugin and ClusterPolicy played), and finish verify pods as the vectoradd sample would on that host")
	_ = fs.Parse(os.Args[2:])
	specs, err := parseNodes(*nodes)
	if err != nil {
		fmt.Fprintln(os.Stderr, "cluster:", err)
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	c, err := localcluster.Start(ctx, localcluster.Options{Dir: *dir, Log: os.Stderr})
	if err != nil {
		fmt.Fprintln(os.Stderr, "cluster:", err)
		os.Exit(1)
	}
	code := 0
	defer func() {
		c.Stop()
		os.Exit(code)
	}()
	names, err := c.AddNodes(ctx, specs...)
	if err != nil {
		// The logs the error names are kept, and their tails printed: a failed start is
		// read from them.
		fmt.Fprintln(os.Stderr, "cluster:", err)
		fmt.Fprintf(os.Stderr, "cluster: the logs are kept in %s; their last lines:\n%s", filepath.Join(c.Dir, "logs"), c.KeepLogs(15))
		code = 1
		return
	}
	fmt.Fprintf(os.Stderr, "%d simulated nodes: %s\n", len(names), strings.Join(names, " "))
	for i := 0; i < *realNodes; i++ {
		name := fmt.Sprintf("gpu-real-%d", i)
		rn, err := c.AddRealNode(ctx, localcluster.RealNodeOptions{Name: name, GPUs: 2, Labels: map[string]string{"nvidia.com/gpu.present": "true"}})
		if err != nil {
			fmt.Fprintln(os.Stderr, "cluster:", err)
			code = 1
			return
		}
		fmt.Fprintf(os.Stderr, "real node %s at %s (network namespace %s)\n", rn.Name, rn.IP, rn.Netns)
	}
	if *agents {
		if err := simulateAgents(ctx, c, names); err != nil {
			fmt.Fprintln(os.Stderr, "cluster:", err)
			code = 1
			return
		}
	}
	if *workload {
		if err := runWorkload(ctx, c); err != nil {
			fmt.Fprintln(os.Stderr, "cluster:", err)
			code = 1
			return
		}
	}
	switch verb {
	case "up":
		fmt.Printf("export KUBECONFIG=%s\n", c.Kubeconfig)
		fmt.Fprintln(os.Stderr, "cluster is up; Ctrl-C stops it")
		<-ctx.Done()
	case "run":
		args := fs.Args()
		if len(args) == 0 {
			usage()
		}
		cmd := exec.CommandContext(ctx, args[0], args[1:]...)
		cmd.Env = append(os.Environ(), "KUBECONFIG="+c.Kubeconfig)
		if *agents {
			// Where the simulated hosts' roots are: a script can change a host (the demo
			// writes an XID into a node's kernel log).
			cmd.Env = append(cmd.Env, "KGPU_SIM_HOSTS="+filepath.Join(c.Dir, "hosts"))
		}
		cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
		if err := cmd.Run(); err != nil {
			var ee *exec.ExitError
			if errors.As(err, &ee) {
				code = ee.ExitCode()
				return
			}
			fmt.Fprintln(os.Stderr, "cluster:", err)
			code = 1
		}
	default:
		usage()
	}
}

// simulateAgents builds the node agent and makes the simulated GPU nodes answer prep with
// it (simnodes.Simulate), keeps each node saying what its host says and plays the GPU
// Operator (simnodes.Coherent, simnodes.PlayOperator): verify passes where the host could run
// the sample.
func simulateAgents(ctx context.Context, c *localcluster.Cluster, names []string) error {
	agent := filepath.Join(c.Dir, "gpu-node-agent")
	if err := simnodes.BuildAgent(ctx, agent); err != nil {
		return err
	}
	roots := map[string]string{}
	var hosts []string
	for _, n := range names {
		if r, ok := simnodes.DefaultAgentRoots[n]; ok {
			roots[n] = r
			hosts = append(hosts, n)
		}
	}
	dir := filepath.Join(c.Dir, "hosts")
	if err := simnodes.Simulate(ctx, c, agent, dir, roots, nil, nil); err != nil {
		return err
	}
	if err := simnodes.Coherent(ctx, c, dir, hosts); err != nil {
		return err
	}
	return simnodes.PlayOperator(ctx, c)
}

// runWorkload starts a training-like pod that holds GPUs on the first A100 node.
func runWorkload(ctx context.Context, c *localcluster.Cluster) error {
	nodes, err := c.Client.CoreV1().Nodes().List(ctx, metav1.ListOptions{LabelSelector: "nvidia.com/gpu.product=NVIDIA-A100-SXM4-80GB"})
	if err != nil || len(nodes.Items) == 0 {
		return err
	}
	_, err = c.RunGPUPod(ctx, "default", "training-0", nodes.Items[0].Name, 4)
	return err
}

func parseNodes(s string) ([]localcluster.NodeSpec, error) {
	if s == "default" {
		return localcluster.DefaultNodes, nil
	}
	if s == "none" {
		return nil, nil
	}
	var specs []localcluster.NodeSpec
	for _, part := range strings.Split(s, ",") {
		name, count, ok := strings.Cut(strings.TrimSpace(part), "=")
		n, err := strconv.Atoi(count)
		if !ok || err != nil || n < 0 {
			return nil, fmt.Errorf("bad node spec %q: want profile=count", part)
		}
		if _, ok := localcluster.Profiles[name]; !ok {
			return nil, fmt.Errorf("unknown node profile %q", name)
		}
		specs = append(specs, localcluster.NodeSpec{Profile: name, Prefix: "gpu-" + name, Count: n})
	}
	return specs, nil
}

func usage() {
	fmt.Fprintln(os.Stderr, "usage: cluster up|run [--dir DIR] [--nodes SPEC] [-- CMD ARGS...]")
	os.Exit(2)
}
