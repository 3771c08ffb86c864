package gpusoftware

import (
	"fmt"
	"sort"

	"sigs.k8s.io/yaml"

	"github.com/kubectl-gpu/kubectl-gpu/common/inventory"
)

// The device plugin's config file (github.com/NVIDIA/k8s-device-plugin api/config/v1), the
// part that shares GPUs. Its Go module is not served by the module proxy this project
// builds from, so the fields are written here as the device plugin names them; the tests
// read what is written back strictly against them.

// DevicePluginConfig is one profile of the device plugin's ConfigMap.
type DevicePluginConfig struct {
	Version string         `json:"version"`
	Flags   map[string]any `json:"flags,omitempty"`
	Sharing DPSharing      `json:"sharing,omitempty"`
}

// DPSharing is the device plugin's sharing section: time-slicing or MPS.
type DPSharing struct {
	TimeSlicing *ReplicatedResources `json:"timeSlicing,omitempty"`
	MPS         *ReplicatedResources `json:"mps,omitempty"`
}

// ReplicatedResources are the shared resources of one strategy.
type ReplicatedResources struct {
	RenameByDefault            bool                 `json:"renameByDefault,omitempty"`
	FailRequestsGreaterThanOne *bool                `json:"failRequestsGreaterThanOne,omitempty"`
	Resources                  []ReplicatedResource `json:"resources,omitempty"`
}

// ReplicatedResource is one resource shared by replicas.
type ReplicatedResource struct {
	Name     string `json:"name"`
	Rename   string `json:"rename,omitempty"`
	Devices  any    `json:"devices,omitempty"`
	Replicas int    `json:"replicas"`
}

// dpFlags are the keys the device plugin reads under flags (api/config/v1 Flags): any
// other key there is ignored without a word, such as renameByDefault, which belongs under
// sharing.timeSlicing.
var dpFlags = map[string]bool{"migStrategy": true, "failOnInitError": true, "mpsRoot": true, "nvidiaDriverRoot": true,
	"nvidiaDevRoot": true, "gdsEnabled": true, "gdrcopyEnabled": true, "mofedEnabled": true, "useNodeFeatureAPI": true,
	"deviceDiscoveryStrategy": true, "plugin": true, "gfd": true, "containerDriverRoot": true, "deviceListStrategy": true,
	"deviceIDStrategy": true, "passDeviceSpecs": true, "cdiAnnotationPrefix": true, "nvidiaCTKPath": true}

// Sharing strategies.
const (
	SharingTimeSlicing = "time-slicing"
	SharingMPS         = "mps"
)

// ProfileName is the ConfigMap key of a sharing profile, such as "time-slicing-4".
func ProfileName(strategy string, replicas int) string {
	return fmt.Sprintf("%s-%d", strategy, replicas)
}

// SharingConfig is the device plugin config that shares each GPU by strategy among
// replicas, advertised as nvidia.com/gpu.shared with rename.
func SharingConfig(strategy string, replicas int, rename bool) DevicePluginConfig {
	rr := &ReplicatedResources{RenameByDefault: rename,
		Resources: []ReplicatedResource{{Name: string(inventory.ResourceGPU), Replicas: replicas}}}
	c := DevicePluginConfig{Version: "v1"}
	if strategy == SharingMPS {
		c.Sharing.MPS = rr
	} else {
		c.Sharing.TimeSlicing = rr
	}
	return c
}

// IgnoredKeys warns about keys of a device plugin config profile that the device plugin
// ignores without a word (it reads its file leniently), such as renameByDefault under flags.
func IgnoredKeys(profile, text string) []string {
	var raw map[string]any
	if err := yaml.Unmarshal([]byte(text), &raw); err != nil {
		return []string{fmt.Sprintf("profile %s of the device plugin's ConfigMap does not parse: %v", profile, err)}
	}
	known := map[string]bool{"version": true, "flags": true, "resources": true, "sharing": true, "imex": true}
	var out []string
	for k := range raw {
		if !known[k] {
			out = append(out, fmt.Sprintf("profile %s: key %q is not read by the device plugin", profile, k))
		}
	}
	if flags, ok := raw["flags"].(map[string]any); ok {
		for k := range flags {
			if !dpFlags[k] {
				hint := ""
				if k == "renameByDefault" {
					hint = " (it belongs under sharing.timeSlicing or sharing.mps)"
				}
				out = append(out, fmt.Sprintf("profile %s: flags.%s is not read by the device plugin%s", profile, k, hint))
			}
		}
	}
	sort.Strings(out)
	return out
}
