package gpusoftware

import (
	"strings"
	"testing"

	"sigs.k8s.io/yaml"

	dpv1 "github.com/kubectl-gpu/kubectl-gpu/hack/testenv/third_party/k8s-device-plugin/api/config/v1"
)

// TestSharingConfigParsesWithTheDevicePluginsOwnPackage: every sharing profile `operator
// sharing` writes is read by the device plugin's own config package (an unmodified copy of
// github.com/NVIDIA/k8s-device-plugin api/config/v1, its module not being served here) with
// its own validation, and says what was asked; that package refuses what the device plugin
// refuses, so the check can fail.
func TestSharingConfigParsesWithTheDevicePluginsOwnPackage(t *testing.T) {
	for _, strategy := range []string{SharingTimeSlicing, SharingMPS} {
		for _, replicas := range []int{2, 4, 16} {
			for _, rename := range []bool{false, true} {
				b, err := yaml.Marshal(SharingConfig(strategy, replicas, rename))
				if err != nil {
					t.Fatal(err)
				}
				var cfg dpv1.Config
				if err := yaml.UnmarshalStrict(b, &cfg); err != nil {
					t.Fatalf("%s %d: the device plugin's package refuses\n%s\n%v", strategy, replicas, b, err)
				}
				rr := &cfg.Sharing.TimeSlicing
				if strategy == SharingMPS {
					rr = cfg.Sharing.MPS
				}
				if cfg.Version != dpv1.Version || rr == nil || len(rr.Resources) != 1 || rr.Resources[0].Replicas != replicas ||
					string(rr.Resources[0].Name) != "nvidia.com/gpu" || rr.RenameByDefault != rename {
					t.Errorf("%s %d rename %v: read back as %+v (version %q)", strategy, replicas, rename, rr, cfg.Version)
				}
			}
		}
	}
	bad := "version: v1\nsharing:\n  timeSlicing:\n    resources:\n    - name: nvidia.com/gpu\n      replicas: 1\n"
	var cfg dpv1.Config
	if err := yaml.UnmarshalStrict([]byte(bad), &cfg); err == nil || !strings.Contains(err.Error(), "replicas must be >= 2") {
		t.Errorf("the device plugin's package accepted 1 replica: %v", err)
	}
}
