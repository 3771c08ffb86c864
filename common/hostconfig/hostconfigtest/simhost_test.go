package hostconfigtest

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestRestartRendersK3s (the simulated host of the tests, not rke2 itself: SimHost plays what
// rke2's agent does at start): restarting rke2 renders its containerd config with the nvidia
// runtime the toolkit put on the host, once; a host with a template of its own is left alone.
func TestRestartRendersK3s(t *testing.T) {
	root := t.TempDir()
	if err := Build("rke2", root, 2); err != nil {
		t.Fatal(err)
	}
	cfg := filepath.Join(root, "var/lib/rancher/rke2/agent/etc/containerd/config.toml")
	h := &SimHost{Root: root}
	for i := 0; i < 2; i++ {
		if _, err := h.Run(context.Background(), "systemctl", "restart", "rke2-server"); err != nil {
			t.Fatal(err)
		}
	}
	b, _ := os.ReadFile(cfg)
	if strings.Count(string(b), `[plugins."io.containerd.grpc.v1.cri".containerd.runtimes."nvidia".options]`) != 1 || !strings.Contains(string(b), `BinaryName = "/usr/bin/nvidia-container-runtime"`) {
		t.Errorf("rendered config:\n%s", b)
	}

	other := t.TempDir()
	if err := Build("rke2", other, 2); err != nil {
		t.Fatal(err)
	}
	tmpl := filepath.Join(other, "var/lib/rancher/rke2/agent/etc/containerd/config.toml.tmpl")
	if err := os.WriteFile(tmpl, []byte("version = 2\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	before, _ := os.ReadFile(filepath.Join(other, "var/lib/rancher/rke2/agent/etc/containerd/config.toml"))
	if _, err := (&SimHost{Root: other}).Run(context.Background(), "systemctl", "restart", "rke2-server"); err != nil {
		t.Fatal(err)
	}
	if after, _ := os.ReadFile(filepath.Join(other, "var/lib/rancher/rke2/agent/etc/containerd/config.toml")); string(after) != string(before) {
		t.Errorf("a host with its own template was rendered:\n%s", after)
	}
}
