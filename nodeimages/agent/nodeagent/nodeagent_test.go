package nodeagent

import (
	"bytes"
	"context"
	"path/filepath"
	"strings"
	"testing"

	"github.com/NVIDIA/go-nvml/pkg/nvml"
	"github.com/NVIDIA/go-nvml/pkg/nvml/mock/dgxa100"

	"github.com/kubectl-gpu/kubectl-gpu/common/hostconfig"
	"github.com/kubectl-gpu/kubectl-gpu/common/hostconfig/fakehost"
	rep "github.com/kubectl-gpu/kubectl-gpu/common/nodereport"
)

// NVML through go-nvml's DGX A100 mock: there is no GPU on the test machines, so this tests
// the agent up to the NVML boundary.
func TestNVMLInfoFromDGXA100Mock(t *testing.T) {
	root := filepath.Join(t.TempDir(), "root")
	if err := fakehost.Build("ubuntu2404-containerd2", root, 0); err != nil {
		t.Fatal(err)
	}
	h := &hostconfig.Host{Root: root}
	srv := dgxa100.New()
	// The DGX A100 mock leaves ECC unimplemented; the A100 SXM4 has ECC on.
	for _, d := range srv.Devices {
		d.(*dgxa100.Device).GetEccModeFunc = func() (nvml.EnableState, nvml.EnableState, nvml.Return) {
			return nvml.FEATURE_ENABLED, nvml.FEATURE_ENABLED, nvml.SUCCESS
		}
	}
	info := nvmlInfo(h, func(*hostconfig.Host) (nvml.Interface, error) { return srv, nil })
	r := rep.New("test", hostconfig.ModeCheck)
	if err := info(r); err != nil {
		t.Fatal(err)
	}
	if len(r.GPUs) != 8 || r.CUDAVersion != "12.4" {
		t.Fatalf("%d GPUs, CUDA %q", len(r.GPUs), r.CUDAVersion)
	}
	g := r.GPUs[0]
	if !strings.Contains(g.Name, "A100") || g.UUID == "" || g.MemoryMiB == 0 || g.Driver != "550.54.15" || g.ECC != "enabled" || g.MIG == "" {
		t.Fatalf("GPU 0: %+v", g)
	}
	if c, ok := r.Get(rep.CheckNVML); !ok || c.Status != rep.OK {
		t.Fatalf("nvml check %+v", c)
	}
}

func TestNVMLMissingLibraryIsReportedNotFatal(t *testing.T) {
	root := filepath.Join(t.TempDir(), "root")
	if err := fakehost.Build("k3s", root, 1); err != nil {
		t.Fatal(err)
	}
	var out, errOut bytes.Buffer
	if code := Main(context.Background(), []string{"check", "--host-root", root, "--node", "n1"}, noEnv, &hostconfig.Recorder{}, &out, &errOut); code != 0 {
		t.Fatalf("exit %d: %s", code, errOut.String())
	}
	r, err := rep.Parse(out.Bytes())
	if err != nil {
		t.Fatal(err)
	}
	c, _ := r.Get(rep.CheckNVML)
	if c.Status != rep.Warn || !strings.Contains(c.Message, "libnvidia-ml.so.1 not found") || r.Node != "n1" || r.DriverVersion != "535.216.03" {
		t.Fatalf("report: %+v %+v", c, r)
	}
}

func TestUsage(t *testing.T) {
	var out, errOut bytes.Buffer
	if code := Main(context.Background(), nil, noEnv, &hostconfig.Recorder{}, &out, &errOut); code != 2 {
		t.Fatalf("no args: exit %d", code)
	}
	if code := Main(context.Background(), []string{"destroy", "--host-root", t.TempDir()}, noEnv, &hostconfig.Recorder{}, &out, &errOut); code != 2 || !strings.Contains(errOut.String(), `unknown mode "destroy"`) {
		t.Fatalf("bad mode: exit %d %s", code, errOut.String())
	}
}

func noEnv(string) string { return "" }
