// Package buildinfo holds the plugin's version, stamped at build time with -ldflags, and
// the node-agent image that goes with it.
package buildinfo

import (
	"runtime"
	"runtime/debug"
	"strings"
)

// Set with -ldflags "-X github.com/kubectl-gpu/kubectl-gpu/common/buildinfo.Version=v1.2.3 ...".
var (
	Version = "v0.0.0-dev"
	Commit  = ""
	// AgentRepository is the node-agent image repository; the tag is the plugin's version
	// so that plugin and agent always agree on the report schema.
	AgentRepository = "ghcr.io/kubectl-gpu/gpu-node-agent"
)

// Info is what `kubectl gpu version` reports about the client.
type Info struct {
	Version    string `json:"version"`
	Commit     string `json:"commit,omitempty"`
	GoVersion  string `json:"goVersion"`
	Platform   string `json:"platform"`
	AgentImage string `json:"agentImage"`
}

// Get returns the client's build information.
func Get() Info {
	return Info{
		Version:    Version,
		Commit:     commit(),
		GoVersion:  runtime.Version(),
		Platform:   runtime.GOOS + "/" + runtime.GOARCH,
		AgentImage: AgentImage(),
	}
}

// AgentImage is the default node-agent image reference for this plugin build.
func AgentImage() string {
	return AgentRepository + ":" + strings.ReplaceAll(Version, "+", "-") // a tag cannot hold "+"
}

func commit() string {
	if Commit != "" {
		return Commit
	}
	if bi, ok := debug.ReadBuildInfo(); ok {
		for _, s := range bi.Settings {
			if s.Key == "vcs.revision" {
				return s.Value
			}
		}
	}
	return ""
}
