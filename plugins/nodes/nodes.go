// Package nodes is `kubectl gpu nodes`: the GPU inventory of the cluster.
package nodes

import (
	"context"
	"fmt"

	"github.com/spf13/cobra"
	"k8s.io/cli-runtime/pkg/genericiooptions"

	"github.com/kubectl-gpu/kubectl-gpu/common/cluster"
	"github.com/kubectl-gpu/kubectl-gpu/common/inventory"
	"github.com/kubectl-gpu/kubectl-gpu/common/report"
	"github.com/kubectl-gpu/kubectl-gpu/plugins/completion"
	"github.com/kubectl-gpu/kubectl-gpu/plugins/verb"
)

// NodesOptions are the flags of `kubectl gpu nodes`.
type NodesOptions struct {
	Names    []string
	Selector string
	All      bool
	Output   string

	format  report.Format
	getter  cluster.Getter
	Streams genericiooptions.IOStreams
}

// NewNodesOptions returns the defaults.
func NewNodesOptions(streams genericiooptions.IOStreams) *NodesOptions {
	return &NodesOptions{Streams: streams}
}

// NewCmdNodes returns `kubectl gpu nodes`.
func NewCmdNodes(f cluster.Getter, streams genericiooptions.IOStreams) *cobra.Command {
	o := NewNodesOptions(streams)
	cmd := &cobra.Command{
		Use:   "nodes [NODE...] [-l SELECTOR] [--all]",
		Short: "Show the GPU inventory: GPUs allocatable and used, product, driver, CUDA, MIG per node",
		Long: `Show one row per GPU node: allocatable GPUs (nvidia.com/gpu and MIG devices), how many
are requested by running pods, and what GPU feature discovery found (product, memory,
driver, CUDA, MIG strategy), with the node's Kubernetes flavour.

A GPU node has GPU capacity or allocatable, or the label nvidia.com/gpu.present=true or
feature.node.kubernetes.io/pci-10de.present=true. --all lists the other nodes too; named
nodes are always listed.`,
		Example: `  kubectl gpu nodes
  kubectl gpu nodes -l nvidia.com/gpu.product=NVIDIA-A100-SXM4-80GB -o wide
  kubectl gpu nodes gpu-node-1 -o json`,
		ValidArgsFunction: completion.GPUNodeNames(f),
		SilenceUsage:      true,
		RunE:              verb.RunE(f, o, nil),
	}
	cmd.Flags().StringVarP(&o.Selector, "selector", "l", "", "label selector of the nodes to show")
	cmd.Flags().BoolVar(&o.All, "all", false, "show nodes without GPUs too")
	cmd.Flags().StringVarP(&o.Output, "output", "o", "", "output format: table, wide, json or yaml")
	_ = cmd.RegisterFlagCompletionFunc("output", cobra.FixedCompletions([]string{"table", "wide", "json", "yaml"}, cobra.ShellCompDirectiveNoFileComp))
	return cmd
}

// Complete fills in what the flags leave open.
func (o *NodesOptions) Complete(f cluster.Getter, args []string) error {
	o.Names = args
	o.getter = f
	return nil
}

// Validate checks the flags before anything touches the cluster.
func (o *NodesOptions) Validate() error {
	var err error
	if o.format, err = report.ParseFormat(o.Output, report.Table, report.Wide, report.JSON, report.YAML); err != nil {
		return err
	}
	_, err = inventory.ParseSelector(o.Selector)
	return err
}

// Run collects and prints the inventory.
func (o *NodesOptions) Run(ctx context.Context) error {
	cs, err := o.getter.Clientset()
	if err != nil {
		return err
	}
	inv, err := inventory.Collect(ctx, cs, inventory.Options{Names: o.Names, Selector: o.Selector, All: o.All})
	if err != nil {
		return err
	}
	if len(inv.Items) == 0 && (o.format == report.Table || o.format == report.Wide) {
		what := "No GPU nodes found"
		if o.Selector != "" {
			what += fmt.Sprintf(" matching %q", o.Selector)
		}
		fmt.Fprintf(o.Streams.ErrOut, "%s. If nodes have NVIDIA GPUs, run 'kubectl gpu prep --all' to check them and 'kubectl gpu operator install' to expose them; 'kubectl gpu nodes --all' lists every node.\n", what)
		return nil
	}
	return report.Print(o.Streams.Out, o.format, inv)
}
