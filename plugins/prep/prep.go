// Package prep is `kubectl gpu prep`.
package prep

import (
	"context"
	"encoding/json"
	"fmt"

	"github.com/spf13/cobra"
	"k8s.io/cli-runtime/pkg/genericiooptions"

	"github.com/kubectl-gpu/kubectl-gpu/common/cliexit"
	"github.com/kubectl-gpu/kubectl-gpu/common/cluster"
	"github.com/kubectl-gpu/kubectl-gpu/common/nodepod"
	"github.com/kubectl-gpu/kubectl-gpu/common/pkginstall"
	"github.com/kubectl-gpu/kubectl-gpu/common/prep"
	"github.com/kubectl-gpu/kubectl-gpu/common/report"
	"github.com/kubectl-gpu/kubectl-gpu/plugins/completion"
	"github.com/kubectl-gpu/kubectl-gpu/plugins/pkgflags"
	"github.com/kubectl-gpu/kubectl-gpu/plugins/rollflags"
	"github.com/kubectl-gpu/kubectl-gpu/plugins/verb"
)

// PrepOptions are the flags of `kubectl gpu prep`: the request they make (flags bound onto
// it), and what only the command has.
type PrepOptions struct {
	prep.Request
	Yes     bool
	Cleanup bool
	Output  string
	// Host packages and the roll (--install-*, --package-*, --reboot, RollOptions).
	Packages    pkgflags.Packages
	Reboot      bool
	RollOptions prep.RollOptions

	changed func(string) bool
	format  report.Format
	getter  cluster.Getter
	Streams genericiooptions.IOStreams
}

// NewPrepOptions returns the defaults.
func NewPrepOptions(streams genericiooptions.IOStreams) *PrepOptions {
	return &PrepOptions{Streams: streams, Request: prep.NewRequest(), RollOptions: prep.DefaultRollOptions(),
		changed: func(string) bool { return false }}
}

// NewCmdPrep returns `kubectl gpu prep`.
func NewCmdPrep(f cluster.Getter, streams genericiooptions.IOStreams) *cobra.Command {
	o := NewPrepOptions(streams)
	cmd := &cobra.Command{
		Use:   "prep [NODE...] [-l SELECTOR | --all] [--apply [--yes]]",
		Short: "Check (and with --apply, prepare) GPU nodes through one-shot node-agent pods",
		Long: `Check GPU nodes the way the kubeadm and RKE2/K3s runbooks prepare them: NVIDIA GPUs on the
PCI bus, driver (and NVML), nouveau, Secure Boot, kernel headers, container toolkit,
containerd's config (SystemdCgroup, nvidia runtime; RKE2/K3s templates), kubelet cgroup
driver, kernel modules overlay/br_netfilter, sysctls, swap.

Each node runs the node agent once in a Job pinned to it (host root mounted read-only in
check mode), in namespace kubectl-gpu (created with the privileged Pod Security label);
the Jobs are removed at the end, on Ctrl-C and on timeout. What the agent found is left on
the node as gpu.kubectl-gpu.io/ annotations for 'kubectl gpu operator'.

Check mode changes nothing. --apply first shows the exact changes per node (file diffs and
commands), asks for confirmation (refuses without --yes when not at a terminal), applies
them — files written atomically with a backup beside them — and checks again. Container
runtimes are restarted only with --restart-runtime.

Host packages (with --apply): --install-driver[=BRANCH] installs the NVIDIA driver with the
host's package manager — on Ubuntu the -server branch with Canonical's signed precompiled
modules (what ubuntu-drivers --gpgpu picks), on Debian and RHEL-compatible 8/9 from NVIDIA's
CUDA repository (DKMS, with the kernel headers; refused with Secure Boot on).
--install-toolkit[=VERSION] installs the NVIDIA Container Toolkit from NVIDIA's
libnvidia-container repository (signed-by keyring, version pinned when given), then the
/dev/char links and containerd's nvidia runtime follow. A host that already has a
repository providing the packages uses it; --package-repo points at a mirror that keeps
NVIDIA's paths, --package-key at its signing key. The plan shows the repository files and
keyrings to write and the packages and versions the host's package manager resolved (a dry
run) before anything is installed; a branch or version the repository does not have stops
the run at plan time on every node. A node whose driver the GPU Operator manages gets no
host driver.

--reboot rolls the nodes whose changes need a reboot (a driver, the nouveau blacklist):
per node cordon, drain by kubectl drain's rules (PodDisruptionBudgets through the eviction
API, DaemonSet pods left; pods with emptyDir data or no controller refused unless
--delete-emptydir-data / --force), install, reboot through the host's systemd, wait for a
new boot ID and Ready, check, uncordon — --max-unavailable nodes at once. The roll stops at
the first node that fails and leaves it cordoned with the reason; where each node stands is
written on it (gpu.kubectl-gpu.io/roll), so running the same command again resumes.
Control-plane nodes are rolled only when named.

Nodes: the named ones, -l, --all, or by default the nodes that look like GPU nodes.
Up to 100 nodes run the read-only check (or plan) at once: the pods are small (10m CPU,
32 MiB) and read only; --apply changes 10 nodes at once. --parallel sets both.

Ctrl-C before every node has reported: exit 130, nothing on stdout. After: the report is
printed with its own exit code. Either way the Jobs are removed first.
Exit codes: 0 every node ready; 1 a node is not ready (or a plan or roll failed); 2 bad
input; 130 interrupted.`,
		Example: `  kubectl gpu prep
  kubectl gpu prep gpu-node-1 gpu-node-2 -o wide
  kubectl gpu prep --all --apply
  kubectl gpu prep -l pool=gpu --apply --yes --restart-runtime
  kubectl gpu prep --all --apply --install-toolkit=1.17.8 --restart-runtime
  kubectl gpu prep -l pool=gpu --apply --install-driver=580 --reboot --max-unavailable 2
  kubectl gpu prep --cleanup`,
		ValidArgsFunction: completion.GPUNodeNames(f),
		SilenceUsage:      true,
		RunE:              verb.RunE(f, o, nil),
	}
	fl := cmd.Flags()
	fl.StringVarP(&o.Selector, "selector", "l", "", "label selector of the nodes")
	fl.BoolVar(&o.All, "all", false, "every node, not only those that look like GPU nodes")
	fl.BoolVar(&o.Apply, "apply", false, "show the changes, ask, apply them and check again")
	fl.BoolVar(&o.Yes, "yes", false, "with --apply: do not ask for confirmation")
	fl.BoolVar(&o.RestartRuntime, "restart-runtime", false, "with --apply: restart containerd / rke2 / k3s when its config changed")
	fl.BoolVar(&o.UntaintControlPlane, "untaint-control-plane", false, "with --apply: remove the control-plane NoSchedule taint from the chosen nodes (single-node clusters)")
	fl.StringVar(&o.Image, "image", o.Image, "node-agent image (a mirror for air-gapped clusters)")
	fl.IntVar(&o.Parallel, "parallel", 0, "nodes at once (default 100 for the read-only check and plan, 10 for apply)")
	fl.DurationVar(&o.Timeout, "timeout", o.Timeout, "time for each phase (check, plan, apply)")
	fl.BoolVar(&o.Cleanup, "cleanup", false, "remove prep Jobs left by earlier runs, and do nothing else")
	fl.StringVarP(&o.Output, "output", "o", "", "output format: table, wide, json or yaml")
	o.Packages.Bind(fl, pkgflags.Names{
		Driver: "install-driver", DriverHelp: "with --apply: install the NVIDIA driver BRANCH on the host, or an exact VERSION (580.95.05: pinned) (default branch " + pkginstall.DefaultDriverBranch + ")",
		Toolkit: "install-toolkit", ToolkitHelp: "with --apply: install the NVIDIA Container Toolkit VERSION on the host (default: the repository's latest)",
		RepoHelp: "mirror of NVIDIA's package repositories, NVIDIA's paths kept (air-gapped clusters)",
		KeyHelp:  "file with the package repositories' OpenPGP signing key (default: the key published beside them)",
	})
	fl.BoolVar(&o.Reboot, "reboot", false, "with --apply: cordon, drain, reboot and uncordon the nodes whose changes need a reboot, one slot at a time")
	rollflags.Bind(fl, &o.RollOptions, "with --reboot: ")
	o.changed = func(name string) bool { return cmd.Flags().Changed(name) }
	return cmd
}

// Complete resolves the namespace and nodes, and where the request shows its plan and
// progress and asks.
func (o *PrepOptions) Complete(f cluster.Getter, args []string) error {
	o.Names, o.getter = args, f
	o.PlanOut, o.Progress = o.Streams.ErrOut, o.Streams.ErrOut
	if !o.Yes {
		o.Confirm = func(question string) error {
			return report.Confirm(o.Streams.In, o.Streams.ErrOut, question,
				"--apply changes nodes: pass --yes to confirm when not at a terminal (nothing was changed)")
		}
	}
	var err error
	o.Namespace, err = cluster.NamespaceOr(f, nodepod.DefaultNamespace)
	return err
}

// Validate checks the flags.
func (o *PrepOptions) Validate() error {
	var err error
	if o.format, err = report.ParseFormat(o.Output, report.Table, report.Wide, report.JSON, report.YAML); err != nil {
		return err
	}
	switch {
	case o.Parallel < 0:
		return cliexit.Usagef("--parallel must be at least 1 (0: the default)")
	case o.Timeout <= 0:
		return cliexit.Usagef("--timeout must be positive")
	case !o.Apply && (o.Yes || o.RestartRuntime || o.UntaintControlPlane):
		return cliexit.Usagef("--yes, --restart-runtime and --untaint-control-plane only go with --apply")
	case len(o.Names) > 0 && o.All:
		return cliexit.Usagef("name nodes or pass --all, not both")
	case !o.Apply && (o.Packages.Driver != "" || o.Packages.Toolkit != "" || o.Reboot):
		return cliexit.Usagef("--install-driver, --install-toolkit and --reboot change nodes: they only go with --apply")
	case !o.Reboot && rollflags.Changed(o.changed):
		return cliexit.Usagef("--max-unavailable, --drain-timeout, --reboot-timeout, --delete-emptydir-data and --force only go with --reboot")
	}
	if err := rollflags.Check(o.RollOptions); err != nil {
		return err
	}
	if o.Install, o.Timeout, err = o.Packages.Install(o.Timeout, o.changed("timeout")); err != nil {
		return err
	}
	if o.Reboot {
		o.Roll = &o.RollOptions
	}
	return nil
}

// Run checks (and applies).
func (o *PrepOptions) Run(ctx context.Context) error {
	cs, err := o.getter.Clientset()
	if err != nil {
		return err
	}
	if o.Cleanup {
		return report.Removed(o.Streams.ErrOut, "prep Jobs", o.Namespace)(prep.Cleanup(ctx, cs, o.Namespace))
	}
	cfg := &o.Request
	if cfg.Roll != nil {
		if cfg.Roll.SelfNode, err = prep.SelfNode(ctx, cs, prep.ThisProcess()); err != nil {
			fmt.Fprintf(o.Streams.ErrOut, "warning: %v: --reboot would not know to leave that node alone; name the nodes to roll\n", err)
		}
	}
	r, err := prep.Run(ctx, cs, cfg)
	if r == nil {
		return err
	}
	return o.print(r, err)
}

func (o *PrepOptions) print(r *prep.Report, annotateErr error) error {
	var err error
	switch o.format {
	case report.JSON:
		var b []byte
		b, err = json.MarshalIndent(r, "", "  ")
		if err == nil {
			_, err = fmt.Fprintf(o.Streams.Out, "%s\n", b)
		}
	default:
		err = report.Print(o.Streams.Out, o.format, r)
		if err == nil && (o.format == report.Table || o.format == report.Wide) {
			r.WriteFindings(o.Streams.Out)
		}
	}
	if err != nil {
		return err
	}
	if annotateErr != nil {
		return annotateErr
	}
	if r.Summary.Failed() {
		return cliexit.Silent{Code: cliexit.Failures}
	}
	return nil
}
