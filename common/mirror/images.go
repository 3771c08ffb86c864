// Package mirror finds every image an install needs (the GPU Operator chart rendered with the
// install's values, the node agent, the verify image) and copies them to a mirror registry
// or an OCI layout for air-gapped clusters, with go-containerregistry.
package mirror

import (
	"fmt"
	"io"
	"sort"
	"strings"

	"helm.sh/helm/v3/pkg/action"
	"helm.sh/helm/v3/pkg/chart"
	"helm.sh/helm/v3/pkg/chartutil"
	kubefake "helm.sh/helm/v3/pkg/kube/fake"
	"helm.sh/helm/v3/pkg/storage"
	"helm.sh/helm/v3/pkg/storage/driver"
	"sigs.k8s.io/yaml"
)

// Image is one image an install needs, and what needs it.
type Image struct {
	Ref string `json:"image"`
	// From says where it was found: "node agent", "verify", or the rendered object and
	// field, such as "ClusterPolicy cluster-policy spec.devicePlugin".
	From string `json:"from"`
	// Digest of the image in its registry (-o json|yaml, when reachable).
	Digest string `json:"digest,omitempty"`
}

// RenderOptions render the chart as an install would, without a cluster.
type RenderOptions struct {
	ReleaseName string
	Namespace   string
	// KubeVersion and APIVersions the chart checks (the server's, when known).
	KubeVersion string
	APIVersions []string
	// DriverOS are the OS tags of the GPU nodes ("ubuntu22.04", "rhel9.4"): the operator
	// pulls the driver image as <version>-<os>.
	DriverOS []string
}

// Render renders the chart with values, as `helm template` would.
func Render(ch *chart.Chart, values map[string]any, o RenderOptions) (string, error) {
	cfg := &action.Configuration{Releases: storage.Init(driver.NewMemory()), KubeClient: &kubefake.PrintingKubeClient{Out: io.Discard},
		Capabilities: chartutil.DefaultCapabilities, Log: func(string, ...any) {}}
	in := action.NewInstall(cfg)
	in.ReleaseName, in.Namespace = o.ReleaseName, o.Namespace
	in.DryRun, in.DryRunOption, in.ClientOnly, in.IncludeCRDs = true, "client", true, false
	if o.KubeVersion != "" {
		kv, err := chartutil.ParseKubeVersion(o.KubeVersion)
		if err != nil {
			return "", err
		}
		in.KubeVersion = kv
	}
	in.APIVersions = o.APIVersions
	rel, err := in.Run(ch, values)
	if err != nil {
		return "", fmt.Errorf("render chart %s %s: %w", ch.Metadata.Name, ch.Metadata.Version, err)
	}
	return rel.Manifest, nil
}

// ChartImages are the images the rendered objects name: container and init-container
// images, env vars named *_IMAGE (images the operator hands its operands), and the
// repository/image/version triplets of the ClusterPolicy, GPUCluster and NVIDIADriver specs
// (the operands the operator deploys itself) whose component is enabled.
func ChartImages(manifest string, o RenderOptions) ([]Image, error) {
	var out []Image
	seen := map[string]bool{}
	add := func(ref, from string) {
		if ref == "" || seen[ref] {
			return
		}
		seen[ref] = true
		out = append(out, Image{Ref: ref, From: from})
	}
	for _, doc := range strings.Split(manifest, "\n---") {
		var obj map[string]any
		if err := yaml.Unmarshal([]byte(doc), &obj); err != nil {
			return nil, fmt.Errorf("read a rendered object: %w", err)
		}
		if obj == nil {
			continue
		}
		kind, _ := obj["kind"].(string)
		name, _ := nested(obj, "metadata", "name").(string)
		what := kind + " " + name
		switch kind {
		case "ClusterPolicy", "GPUCluster", "NVIDIADriver":
			spec, _ := obj["spec"].(map[string]any)
			sandbox, _ := nested(spec, "sandboxWorkloads", "enabled").(bool)
			for _, comp := range sortedKeys(spec) {
				m, ok := spec[comp].(map[string]any)
				if !ok || m["enabled"] == false || sandboxOperands[comp] && !sandbox {
					continue
				}
				specImages(m, "spec."+comp, comp == "driver" || kind == "NVIDIADriver", o.DriverOS, func(ref, path string) { add(ref, what+" "+path) })
			}
		default:
			walkContainers(obj, func(ref, field string) { add(ref, what+" "+field) })
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Ref < out[j].Ref })
	return out, nil
}

// sandboxOperands run only for VM and confidential workloads (sandboxWorkloads.enabled):
// the operator deploys none of them otherwise, whatever their own enabled says.
var sandboxOperands = map[string]bool{"sandboxDevicePlugin": true, "kataSandboxDevicePlugin": true, "vgpuDeviceManager": true,
	"vgpuManager": true, "vfioManager": true, "ccManager": true, "kataManager": true}

// specImages finds repository/image/version triplets in a spec component (and the maps
// under it, such as driver.manager).
func specImages(m map[string]any, path string, driverOS bool, osTags []string, add func(ref, path string)) {
	repo, _ := m["repository"].(string)
	img, _ := m["image"].(string)
	ver, _ := m["version"].(string)
	if repo != "" && img != "" && ver != "" {
		base := repo + "/" + img
		switch {
		case strings.HasPrefix(ver, "sha256:"):
			add(base+"@"+ver, path)
		case driverOS && len(osTags) > 0:
			for _, os := range osTags {
				add(base+":"+ver+"-"+os, path)
			}
		default:
			add(base+":"+ver, path)
		}
	}
	for _, k := range sortedKeys(m) {
		if sub, ok := m[k].(map[string]any); ok && sub["enabled"] != false {
			specImages(sub, path+"."+k, false, nil, add)
		}
	}
}

// walkContainers finds container images and *_IMAGE env vars anywhere in an object.
func walkContainers(v any, add func(ref, field string)) {
	switch x := v.(type) {
	case map[string]any:
		for _, key := range []string{"containers", "initContainers"} {
			list, _ := x[key].([]any)
			for _, c := range list {
				cm, ok := c.(map[string]any)
				if !ok {
					continue
				}
				cname, _ := cm["name"].(string)
				if img, ok := cm["image"].(string); ok {
					add(img, key+"["+cname+"]")
				}
				env, _ := cm["env"].([]any)
				for _, e := range env {
					em, _ := e.(map[string]any)
					n, _ := em["name"].(string)
					if val, ok := em["value"].(string); ok && strings.HasSuffix(n, "_IMAGE") && val != "" {
						add(val, key+"["+cname+"] env "+n)
					}
				}
			}
		}
		for _, k := range sortedKeys(x) {
			if k != "containers" && k != "initContainers" {
				walkContainers(x[k], add)
			}
		}
	case []any:
		for _, e := range x {
			walkContainers(e, add)
		}
	}
}

func nested(m map[string]any, keys ...string) any {
	var v any = m
	for _, k := range keys {
		mm, ok := v.(map[string]any)
		if !ok {
			return nil
		}
		v = mm[k]
	}
	return v
}

func sortedKeys(m map[string]any) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// DriverOSTag is the tag suffix of the driver image for a node's OS image, as the GPU
// Operator picks it ("Ubuntu 22.04.5 LTS" → "ubuntu22.04", "Red Hat Enterprise Linux 9.4
// (Plow)" → "rhel9.4"); "" when unknown.
func DriverOSTag(osImage string) string {
	f := strings.Fields(osImage)
	if len(f) < 2 {
		return ""
	}
	switch {
	case f[0] == "Ubuntu":
		v := strings.Split(f[1], ".")
		if len(v) >= 2 {
			return "ubuntu" + v[0] + "." + v[1]
		}
	case strings.HasPrefix(osImage, "Red Hat Enterprise Linux"):
		for _, w := range f {
			if len(w) > 0 && w[0] >= '0' && w[0] <= '9' {
				return "rhel" + w
			}
		}
	case f[0] == "Debian":
		for _, w := range f {
			if len(w) > 0 && w[0] >= '0' && w[0] <= '9' {
				return "debian" + strings.Split(w, ".")[0]
			}
		}
	}
	return ""
}
