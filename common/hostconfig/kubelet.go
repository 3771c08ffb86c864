package hostconfig

import (
	"fmt"
	"path"
	"strings"

	rep "github.com/kubectl-gpu/kubectl-gpu/common/nodereport"
)

// checkKubeletPlugins lists the NVIDIA plugins registered with the kubelet: a device plugin
// whose socket is gone (a kubelet restart empties the directory) serves no GPU until it
// registers again; the cluster side (kubectl gpu doctor) tells whether one should be there.
func checkKubeletPlugins(h *Host, r *rep.Report) {
	if len(r.GPUs) == 0 {
		r.Add(rep.CheckKubeletPlugins, rep.Skipped, "no NVIDIA GPU", "")
		return
	}
	// The kubelet's own socket is there whenever a kubelet runs with this root directory
	// (k0s, MicroK8s and others keep theirs elsewhere).
	if !h.Exists(path.Join(rep.DevicePluginDir, "kubelet.sock")) {
		r.Add(rep.CheckKubeletPlugins, rep.Skipped, "no kubelet socket in "+rep.DevicePluginDir+" (a kubelet with another root directory?): plugin registration not read", "")
		return
	}
	for _, p := range h.Glob(path.Join(rep.DevicePluginDir, "*.sock")) {
		if b := path.Base(p); strings.HasPrefix(b, "nvidia") {
			r.KubeletPlugins = append(r.KubeletPlugins, p)
		}
	}
	for _, p := range h.Glob(path.Join(rep.PluginRegistryDir, "*")) {
		if strings.Contains(path.Base(p), "nvidia.com") {
			r.KubeletPlugins = append(r.KubeletPlugins, p)
		}
	}
	if len(r.KubeletPlugins) == 0 {
		r.Add(rep.CheckKubeletPlugins, rep.OK, fmt.Sprintf("no NVIDIA plugin registered with the kubelet (no nvidia socket in %s or %s)", rep.DevicePluginDir, rep.PluginRegistryDir), "")
		return
	}
	r.Add(rep.CheckKubeletPlugins, rep.OK, "registered with the kubelet: "+strings.Join(r.KubeletPlugins, ", "), "")
}
