// Package up is `kubectl gpu up`.
package up

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"time"

	"github.com/spf13/cobra"
	"helm.sh/helm/v3/pkg/cli/values"
	"k8s.io/cli-runtime/pkg/genericiooptions"
	"k8s.io/client-go/dynamic"

	"github.com/kubectl-gpu/kubectl-gpu/common/buildinfo"
	"github.com/kubectl-gpu/kubectl-gpu/common/cliexit"
	"github.com/kubectl-gpu/kubectl-gpu/common/cluster"
	dp "github.com/kubectl-gpu/kubectl-gpu/common/deviceplugin"
	"github.com/kubectl-gpu/kubectl-gpu/common/helmrelease"
	"github.com/kubectl-gpu/kubectl-gpu/common/mirror"
	"github.com/kubectl-gpu/kubectl-gpu/common/nodepod"
	op "github.com/kubectl-gpu/kubectl-gpu/common/operator"
	"github.com/kubectl-gpu/kubectl-gpu/common/pkginstall"
	"github.com/kubectl-gpu/kubectl-gpu/common/prep"
	"github.com/kubectl-gpu/kubectl-gpu/common/report"
	"github.com/kubectl-gpu/kubectl-gpu/common/up"
	"github.com/kubectl-gpu/kubectl-gpu/common/verify"
	"github.com/kubectl-gpu/kubectl-gpu/plugins/completion"
	"github.com/kubectl-gpu/kubectl-gpu/plugins/helmflags"
	"github.com/kubectl-gpu/kubectl-gpu/plugins/pkgflags"
	"github.com/kubectl-gpu/kubectl-gpu/plugins/rollflags"
	"github.com/kubectl-gpu/kubectl-gpu/plugins/verb"
)

// Clients makes what up talks to; command tests give fakes.
type Clients func(g cluster.Getter, releaseNamespace string, o *Options) (up.Clients, error)

// Options are the flags of `kubectl gpu up`.
type Options struct {
	Names          []string
	Selector       string
	Stack          string
	Packages       pkgflags.Packages
	Mirror         string
	PlainHTTP      bool
	Chart          string
	Repo           string
	Version        string
	Values         values.Options
	RestartRuntime bool
	Roll           prep.RollOptions
	Canary         int
	Image          string
	VerifyImage    string
	PrepTimeout    time.Duration
	Timeout        time.Duration
	DryRun         bool
	Yes            bool
	Output         string
	JUnitFile      string
	// The device-plugin stack's choices, as 'device-plugin install' has them.
	GFD         bool
	DCGM        bool
	DCGMChart   string
	DCGMVersion string
	Sharing     string
	Replicas    int
	Rename      bool

	changed   func(string) bool
	format    report.Format
	namespace string
	req       up.Request
	getter    cluster.Getter
	clients   Clients
	Streams   genericiooptions.IOStreams
}

// NewCmdUp returns `kubectl gpu up`.
func NewCmdUp(f cluster.Getter, streams genericiooptions.IOStreams) *cobra.Command {
	return newCmdUp(f, streams, clusterClients)
}

func clusterClients(g cluster.Getter, releaseNamespace string, o *Options) (up.Clients, error) {
	cs, err := g.Clientset()
	if err != nil {
		return up.Clients{}, err
	}
	cfg, err := g.ToRESTConfig()
	if err != nil {
		return up.Clients{}, cluster.ConfigError(err)
	}
	dyn, err := dynamic.NewForConfig(cfg)
	if err != nil {
		return up.Clients{}, cluster.ConfigError(err)
	}
	c, err := op.NewClient(g, releaseNamespace, o.Streams.ErrOut)
	if err != nil {
		return up.Clients{}, err
	}
	c.Progress = report.OnTerminal(o.Streams.ErrOut)
	return up.Clients{CS: cs, Dynamic: dyn, Release: c}, nil
}

func newCmdUp(f cluster.Getter, streams genericiooptions.IOStreams, clients Clients) *cobra.Command {
	o := &Options{Streams: streams, clients: clients, Stack: string(up.StackOperator), RestartRuntime: true, Roll: prep.DefaultRollOptions(), Canary: up.DefaultCanary,
		Image: buildinfo.AgentImage(), VerifyImage: verify.DefaultImage, PrepTimeout: prep.DefaultTimeout, Timeout: 10 * time.Minute}
	cmd := &cobra.Command{
		Use:   "up [NODE...] [-l SELECTOR] [--stack operator|device-plugin] [--host-driver[=BRANCH]] [--host-toolkit[=VERSION]] [--dry-run | --yes]",
		Short: "The whole runbook as one resumable plan: prep, host installs and rolling reboot, the GPU software, verify",
		Long: `Take the GPU nodes from bare to verified in one command, on an existing cluster:

  1. prep: the host changes prep --apply makes (kernel modules, sysctls, swap, containerd's
     cgroup driver and nvidia runtime), the host driver (--host-driver) and toolkit
     (--host-toolkit) where the host owns them, and the rolling reboot of the nodes whose
     changes need one (--max-unavailable at a time, kubectl drain's rules): the --canary
     nodes first, the others only after them; when the GPU software is deployed already (an
     upgrade: a new --host-driver branch, --host-toolkit version, chart or values) each
     node is verified before it is uncordoned, and the first that fails stops the roll,
     cordoned, with doctor's diagnosis;
  2. the GPU software: the GPU Operator (--stack operator, the default) or NVIDIA's device
     plugin (--stack device-plugin: needs the host driver and toolkit), with values derived
     from the nodes as step 1 leaves them, then the wait until it is ready;
  3. verify: the CUDA vectoradd sample on every GPU node, once each advertises its GPUs (a
     device plugin registers a little after its pod is ready: waited for up to 2 minutes,
     within --timeout); for each node that fails, doctor's first broken link and its fix.

The nodes are read once (prep's agents in plan mode) and the whole plan is shown first:
per node the file diffs, commands and packages, which nodes are rebooted, the release with
its derived values and their reasons, the verify run, and the decisions that tie the steps
(a host driver turns the operator's driver off; RKE2/K3s templates and sockets; --mirror
moves every image). --dry-run stops there (exit 0; -o yaml is an UpPlan to review and
store). Otherwise it asks once (--yes when not at a terminal) and runs.

Where the run stands is recorded on the nodes (the roll's annotations) and in ConfigMap
kubectl-gpu-up of namespace kubectl-gpu, before and after each step. The same command after
Ctrl-C, a crash or a fix plans again from the cluster and goes on from what is not done;
a plan that differs from the recorded one (nodes, stack, host installs, values) is shown
as the difference and asked again. On a cluster already up it changes nothing and only
verifies.

--mirror REGISTRY[/PREFIX] (filled by 'kubectl gpu mirror --to'): the node agent, the CUDA
sample, the chart and every image of its values come from the mirror.

Exit codes: 0 every GPU node verified (or --dry-run); 1 a step failed or a node is not
verified; 2 bad input or a plan that cannot run (nothing changed); 130 interrupted.`,
		Example: `  kubectl gpu up --dry-run
  kubectl gpu up --dry-run -o yaml > up-plan.yaml
  kubectl gpu up --yes
  kubectl gpu up -l pool=gpu --host-driver --host-toolkit --stack device-plugin --yes
  kubectl gpu up --mirror registry.example.com:5000/gpu --yes --junit up.xml`,
		ValidArgsFunction: completion.GPUNodeNames(f),
		SilenceUsage:      true,
		RunE:              verb.RunE(f, o, nil),
	}
	fl := cmd.Flags()
	fl.StringVarP(&o.Selector, "selector", "l", "", "label selector of the nodes (default: the nodes that look like GPU nodes)")
	fl.StringVar(&o.Stack, "stack", o.Stack, "the GPU software: operator (the GPU Operator) or device-plugin (NVIDIA's device plugin; needs the host driver and toolkit)")
	o.Packages.Bind(fl, pkgflags.Names{
		Driver: "host-driver", DriverHelp: "install the NVIDIA driver BRANCH on the hosts, or an exact VERSION (580.95.05: pinned, the way back after an upgrade) (default branch " + pkginstall.DefaultDriverBranch + ")",
		Toolkit: "host-toolkit", ToolkitHelp: "install the NVIDIA Container Toolkit VERSION on the hosts (default: the repository's latest)",
		RepoHelp: "mirror of NVIDIA's package repositories, NVIDIA's paths kept",
		KeyHelp:  "file with the package repositories' OpenPGP signing key",
	})
	fl.StringVar(&o.Mirror, "mirror", "", "every image and the chart from this mirror REGISTRY[/PREFIX] (filled by 'kubectl gpu mirror --to')")
	fl.BoolVar(&o.PlainHTTP, "plain-http", false, "read the chart from the --mirror over plain HTTP")
	fl.StringVar(&o.Chart, "chart", "", "the stack's chart from a local directory, a .tgz or an oci:// reference")
	fl.StringVar(&o.Repo, "repo", "", "the stack's chart repository URL")
	fl.StringVar(&o.Version, "version", "", "the stack's chart version (default "+op.DefaultVersion+" for the operator, "+dp.DefaultVersion+" for the device plugin)")
	fl.StringSliceVarP(&o.Values.ValueFiles, "values", "f", nil, "values of the stack's chart from a YAML file (can repeat)")
	fl.StringArrayVar(&o.Values.Values, "set", nil, "set values of the stack's chart (key1=val1,key2=val2)")
	fl.StringArrayVar(&o.Values.StringValues, "set-string", nil, "set STRING values of the stack's chart")
	fl.StringArrayVar(&o.Values.JSONValues, "set-json", nil, "set JSON values of the stack's chart (key=jsonval)")
	fl.BoolVar(&o.RestartRuntime, "restart-runtime", o.RestartRuntime, "restart containerd / rke2 / k3s where its config changes (running containers keep running)")
	rollflags.Bind(fl, &o.Roll, "")
	fl.IntVar(&o.Canary, "canary", o.Canary, "rolled nodes that go first: every other node is drained only after they are done (and, when the GPU software is deployed, verified); 0: none")
	fl.StringVar(&o.Image, "image", o.Image, "node-agent image")
	fl.StringVar(&o.VerifyImage, "verify-image", o.VerifyImage, "CUDA sample image of the verify step")
	fl.DurationVar(&o.PrepTimeout, "prep-timeout", o.PrepTimeout, "time for each of prep's phases (plan, apply; 20m with host installs)")
	fl.DurationVar(&o.Timeout, "timeout", o.Timeout, "time for the release to install and become ready, and for verify")
	fl.BoolVar(&o.DryRun, "dry-run", false, "show the plan and stop; change nothing")
	fl.BoolVar(&o.Yes, "yes", false, "do not ask for confirmation")
	fl.StringVarP(&o.Output, "output", "o", "", "output format: table, wide, json or yaml (with --dry-run: the UpPlan)")
	fl.StringVar(&o.JUnitFile, "junit", "", "also write the report as JUnit XML to FILE (one test case per step and per node)")
	// The device-plugin stack's own choices (the GPU Operator has GFD, the exporter and
	// sharing of its own: its values, and 'kubectl gpu operator sharing').
	fl.BoolVar(&o.GFD, "gfd", true, "with --stack device-plugin: GPU feature discovery (labels each GPU node with its GPUs)")
	fl.BoolVar(&o.DCGM, "dcgm-exporter", false, "with --stack device-plugin: also NVIDIA's DCGM exporter (GPU metrics for Prometheus), its own release")
	fl.StringVar(&o.DCGMChart, "dcgm-chart", "", "with --dcgm-exporter: the exporter chart from a local directory, a .tgz or an oci:// reference")
	fl.StringVar(&o.DCGMVersion, "dcgm-version", dp.DCGMVersion, "with --dcgm-exporter: the exporter chart's version")
	fl.StringVar(&o.Sharing, "sharing", "", "with --stack device-plugin: share each GPU, time-slicing or mps, with --replicas")
	fl.IntVar(&o.Replicas, "replicas", 0, "with --sharing: pods per GPU (at least 2)")
	fl.BoolVar(&o.Rename, "rename", false, "with --sharing: advertise the shared GPUs as nvidia.com/gpu.shared")
	o.changed = func(name string) bool { return cmd.Flags().Changed(name) }
	return cmd
}

// devicePluginFlags are the flags only the device-plugin stack reads.
var devicePluginFlags = []string{"gfd", "dcgm-exporter", "dcgm-chart", "dcgm-version", "sharing", "replicas", "rename"}

// Complete resolves the namespace and nodes.
func (o *Options) Complete(f cluster.Getter, args []string) error {
	o.Names, o.getter = args, f
	var err error
	o.namespace, err = cluster.NamespaceOr(f, nodepod.DefaultNamespace)
	return err
}

// Validate checks the flags and builds the request.
func (o *Options) Validate() error {
	var err error
	if o.format, err = report.ParseFormat(o.Output, report.Table, report.Wide, report.JSON, report.YAML); err != nil {
		return err
	}
	if err := rollflags.Check(o.Roll); err != nil {
		return err
	}
	switch {
	case o.Stack != string(up.StackOperator) && o.Stack != string(up.StackDevicePlugin):
		return cliexit.Usagef("--stack %q: use operator or device-plugin", o.Stack)
	case o.Canary < 0:
		return cliexit.Usagef("--canary must not be negative (0: no canary)")
	case o.PrepTimeout <= 0 || o.Timeout <= 0:
		return cliexit.Usagef("--prep-timeout and --timeout must be positive")
	case o.DryRun && o.Yes:
		return cliexit.Usagef("--dry-run changes nothing: --yes does not go with it")
	case o.DryRun && o.JUnitFile != "":
		return cliexit.Usagef("--junit writes the run's report: it does not go with --dry-run")
	}
	if o.Stack == string(up.StackOperator) {
		for _, name := range devicePluginFlags {
			if o.changed(name) {
				return cliexit.Usagef("--%s goes with --stack device-plugin: the GPU Operator has GFD, the DCGM exporter and sharing of its own (its values; 'kubectl gpu operator sharing')", name)
			}
		}
	}
	if o.Sharing == "" && (o.Replicas != 0 || o.Rename) {
		return cliexit.Usagef("--replicas and --rename go with --sharing time-slicing|mps")
	}
	if !o.DCGM && (o.changed("dcgm-chart") || o.changed("dcgm-version")) {
		return cliexit.Usagef("--dcgm-chart and --dcgm-version go with --dcgm-exporter")
	}
	inst, prepTimeout, err := o.Packages.Install(o.PrepTimeout, o.changed("prep-timeout"))
	if err != nil {
		return err
	}
	o.PrepTimeout = prepTimeout
	stack := up.Stack(o.Stack)
	d := helmflags.Operator
	if stack == up.StackDevicePlugin {
		d = helmflags.DevicePlugin
	}
	version := o.Version
	if version == "" {
		version = d.Version
	}
	src := helmrelease.ChartSource{Name: d.Chart, DefaultRepo: d.Repo, Chart: o.Chart, Repo: o.Repo, Version: version, VersionGiven: o.Version != "", PlainHTTP: o.PlainHTTP}
	var decisions []up.Decision
	var mapper helmrelease.RepositoryMapper
	image, verifyImage := o.Image, o.VerifyImage
	if o.Mirror != "" {
		t, err := mirror.ParseTarget(o.Mirror, false)
		if err != nil {
			return err
		}
		mapper = t
		if src.Chart == "" && src.Repo == "" {
			src.Chart = t.ChartRefOf(d.Chart)
		}
		if !o.changed("image") {
			if image, err = t.Map(o.Image); err != nil {
				return cliexit.Usagef("--mirror: %v", err)
			}
		}
		if !o.changed("verify-image") {
			if verifyImage, err = t.Map(o.VerifyImage); err != nil {
				return cliexit.Usagef("--mirror: %v", err)
			}
		}
		decisions = append(decisions, up.Decision{Decision: fmt.Sprintf("node agent %s, CUDA sample %s, chart %s, every image of the chart's values from %s", image, verifyImage, src.Chart, t), Reason: "--mirror (filled by 'kubectl gpu mirror --to')"})
	}
	roll := o.Roll
	o.req = up.Request{
		Names: o.Names, Selector: o.Selector, Stack: stack, Decisions: decisions, Canary: o.Canary,
		Prep: prep.Request{Namespace: o.namespace, Image: image, Timeout: o.PrepTimeout, RestartRuntime: o.RestartRuntime, Install: inst,
			Roll: &roll},
		Install: helmrelease.InstallRequest{ReleaseName: d.ReleaseName, Timeout: o.Timeout, ValuesCommand: "kubectl gpu up --dry-run"},
		Verify:  verify.Request{Namespace: o.namespace, Image: verifyImage, RuntimeClass: verify.RuntimeAuto, Timeout: o.Timeout},
	}
	switch stack {
	case up.StackOperator:
		o.req.Operator = op.ValuesRequest{Source: src, Derive: true, Mirror: mapper}
	case up.StackDevicePlugin:
		r := dp.NewRequest()
		r.Source, r.Mirror = src, mapper
		r.GFD, r.DCGM = o.GFD, o.DCGM
		if o.DCGM {
			chartRef := o.DCGMChart
			if chartRef == "" && mapper != nil {
				if t, ok := mapper.(mirror.Target); ok {
					chartRef = t.ChartRefOf(dp.DCGMChartName)
				}
			}
			r.DCGMSource = helmrelease.ChartSource{Chart: chartRef, Version: o.DCGMVersion, PlainHTTP: o.PlainHTTP}
		}
		if o.Sharing != "" {
			r.Sharing = &dp.Sharing{Strategy: o.Sharing, Replicas: o.Replicas, Rename: o.Rename}
		}
		o.req.DevicePlugin = r
	}
	return o.req.Validate()
}

// Run plans, shows the plan, asks, runs and prints the report.
func (o *Options) Run(ctx context.Context) error {
	ns := op.DefaultNamespace
	if o.req.Stack == up.StackDevicePlugin {
		ns = dp.DefaultNamespace
	}
	c, err := o.clients(o.getter, ns, o)
	if err != nil {
		return err
	}
	user, err := helmflags.UserValues(&o.Values, c.Release)
	if err != nil {
		return err
	}
	o.req.Operator.User, o.req.DevicePlugin.User = user, user
	progress := report.OnTerminal(o.Streams.ErrOut)
	o.req.Progress = o.Streams.ErrOut
	o.req.Prep.Progress, o.req.Verify.Progress = progress, progress
	plan, err := up.MakePlan(ctx, c, o.req)
	if err != nil {
		return err
	}
	if o.DryRun {
		if o.format == report.Table || o.format == report.Wide {
			plan.WriteText(o.Streams.Out)
			return nil
		}
		return o.printDoc(plan)
	}
	plan.WriteText(o.Streams.ErrOut)
	if plan.Changes() > 0 || len(plan.Differences) > 0 {
		if !o.Yes {
			question := fmt.Sprintf("\nRun this plan on %s?", report.Count(len(plan.Nodes), "node"))
			if len(plan.Differences) > 0 {
				question = "\nThe plan differs from the recorded run (above). Run this plan?"
			}
			if err := report.Confirm(o.Streams.In, o.Streams.ErrOut, question,
				"up changes nodes and installs the GPU software: pass --yes to confirm when not at a terminal, or --dry-run to see the plan (nothing was changed)"); err != nil {
				return err
			}
		}
	} else {
		fmt.Fprintln(o.Streams.ErrOut, "\nnothing to change: the cluster is up; verifying")
	}
	r, err := up.Run(ctx, c, o.req, plan)
	if err != nil {
		return err
	}
	if o.JUnitFile != "" {
		if err := writeJUnit(o.JUnitFile, r); err != nil {
			return err
		}
	}
	if o.format == report.Table || o.format == report.Wide {
		if err := report.Print(o.Streams.Out, o.format, r); err != nil {
			return err
		}
		r.WriteSummary(o.Streams.Out)
	} else if err := o.printDoc(r); err != nil {
		return err
	}
	if r.Summary.Failed > 0 || r.Summary.Verified < r.Summary.Nodes {
		return cliexit.Silent{Code: cliexit.Failures}
	}
	return nil
}

func (o *Options) printDoc(doc any) error {
	if o.format == report.JSON {
		b, err := json.MarshalIndent(doc, "", "  ")
		if err != nil {
			return err
		}
		_, err = fmt.Fprintf(o.Streams.Out, "%s\n", b)
		return err
	}
	return report.Print(o.Streams.Out, o.format, doc)
}

func writeJUnit(path string, r *up.Report) error {
	f, err := os.Create(path)
	if err != nil {
		return cliexit.Usagef("cannot write --junit: %w", err)
	}
	if err := r.WriteJUnit(f); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
