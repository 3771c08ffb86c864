// Package version is `kubectl gpu version`.
package version

import (
	"context"
	"fmt"
	"io"

	"github.com/spf13/cobra"
	"k8s.io/cli-runtime/pkg/genericiooptions"
	"k8s.io/cli-runtime/pkg/printers"

	"github.com/kubectl-gpu/kubectl-gpu/common/buildinfo"
	"github.com/kubectl-gpu/kubectl-gpu/common/cliexit"
	"github.com/kubectl-gpu/kubectl-gpu/common/cluster"
	"github.com/kubectl-gpu/kubectl-gpu/common/report"
	"github.com/kubectl-gpu/kubectl-gpu/plugins/verb"
)

// Kind of the version document.
const Kind = "VersionInfo"

// Info is the `kubectl gpu version` document.
type Info struct {
	report.TypeMeta `json:",inline"`
	Client          buildinfo.Info `json:"client"`
	Server          *ServerInfo    `json:"server,omitempty"`
	// ServerError says why the server version is missing.
	ServerError string `json:"serverError,omitempty"`
}

// ServerInfo is the API server's version.
type ServerInfo struct {
	GitVersion string `json:"gitVersion"`
	Platform   string `json:"platform"`
}

// WriteText prints the versions one per line.
func (i *Info) WriteText(w io.Writer) error {
	rows := [][]string{
		{"Plugin:", i.Client.Version},
		{"Commit:", dash(i.Client.Commit)},
		{"Go:", i.Client.GoVersion + " " + i.Client.Platform},
		{"Node agent image:", i.Client.AgentImage},
	}
	switch {
	case i.Server != nil:
		rows = append(rows, []string{"Server:", i.Server.GitVersion})
	case i.ServerError != "":
		rows = append(rows, []string{"Server:", "unavailable: " + i.ServerError})
	}
	tw := printers.GetNewTabWriter(w)
	for _, r := range rows {
		fmt.Fprintf(tw, "%s\t%s\n", r[0], r[1])
	}
	return tw.Flush()
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// VersionOptions are the flags of `kubectl gpu version`.
type VersionOptions struct {
	// ClientOnly skips the server.
	ClientOnly bool
	// RequireServer fails (exit 2) when the server does not answer.
	RequireServer bool
	Output        string

	format  report.Format
	getter  cluster.Getter
	Streams genericiooptions.IOStreams
}

// NewVersionOptions returns the defaults.
func NewVersionOptions(streams genericiooptions.IOStreams) *VersionOptions {
	return &VersionOptions{Streams: streams}
}

// NewCmdVersion returns `kubectl gpu version`.
func NewCmdVersion(f cluster.Getter, streams genericiooptions.IOStreams) *cobra.Command {
	o := NewVersionOptions(streams)
	cmd := &cobra.Command{
		Use:   "version",
		Short: "Print the plugin, node-agent image and server versions",
		Long: `Print the plugin's version and commit, the Go version it was built with, the node-agent
image that prep will run (tagged with the plugin's version), and the API server's version
when the cluster answers. An unreachable cluster is reported, not an error, unless
--require-server is given.`,
		Args:         cobra.NoArgs,
		SilenceUsage: true,
		RunE:         verb.RunE(f, o, nil),
	}
	cmd.Flags().BoolVar(&o.ClientOnly, "client", false, "print the client's version only")
	cmd.Flags().BoolVar(&o.RequireServer, "require-server", false, "fail when the server version cannot be read")
	cmd.Flags().StringVarP(&o.Output, "output", "o", "", "output format: table, json or yaml")
	return cmd
}

// Complete keeps the cluster's getter (read only when the server is asked).
func (o *VersionOptions) Complete(f cluster.Getter, _ []string) error {
	o.getter = f
	return nil
}

// Validate checks the flags.
func (o *VersionOptions) Validate() error {
	var err error
	o.format, err = report.ParseFormat(o.Output, report.Table, report.JSON, report.YAML)
	if err == nil && o.ClientOnly && o.RequireServer {
		return cliexit.Usagef("--client and --require-server exclude each other")
	}
	return err
}

// Run prints the versions.
func (o *VersionOptions) Run(ctx context.Context) error {
	info := &Info{TypeMeta: report.Meta(Kind), Client: buildinfo.Get()}
	if !o.ClientOnly {
		sv, err := serverVersion(o.getter)
		if err != nil {
			if o.RequireServer {
				return err
			}
			info.ServerError = err.Error()
		} else {
			info.Server = sv
		}
	}
	return report.Print(o.Streams.Out, o.format, info)
}

func serverVersion(f cluster.Getter) (*ServerInfo, error) {
	dc, err := f.ToDiscoveryClient()
	if err != nil {
		return nil, cluster.ConfigError(err)
	}
	v, err := dc.ServerVersion()
	if err != nil {
		return nil, cluster.APIError("read the server version", err)
	}
	return &ServerInfo{GitVersion: v.GitVersion, Platform: v.Platform}, nil
}
