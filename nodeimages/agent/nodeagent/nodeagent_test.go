package nodeagent

import (
	"bytes"
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"testing"

	"github.com/NVIDIA/go-nvml/pkg/nvml"
	"github.com/NVIDIA/go-nvml/pkg/nvml/mock/dgxa100"

	"github.com/kubectl-gpu/kubectl-gpu/common/hostconfig"
	"github.com/kubectl-gpu/kubectl-gpu/common/hostconfig/hostconfigtest"
	rep "github.com/kubectl-gpu/kubectl-gpu/common/nodereport"
)

// NVML through go-nvml's DGX A100 mock: there is no GPU on the test machines, so this tests
// the agent up to the NVML boundary.
func TestNVMLInfoFromDGXA100Mock(t *testing.T) {
	root := filepath.Join(t.TempDir(), "root")
	if err := hostconfigtest.Build("ubuntu2404-containerd2", root, 0); err != nil {
		t.Fatal(err)
	}
	h := &hostconfig.Host{Root: root}
	srv := dgxa100.New()
	// The DGX A100 mock leaves ECC and the health queries unimplemented; the A100 SXM4 has
	// ECC on, and every GPU is healthy here.
	healthy(srv)
	info := nvmlInfo(h, func(*hostconfig.Host) (nvml.Interface, error) { return srv, nil })
	r := rep.New("test", hostconfig.ModeCheck)
	if err := info(r); err != nil {
		t.Fatal(err)
	}
	if len(r.GPUs) != 8 || r.CUDAVersion != "12.4" {
		t.Fatalf("%d GPUs, CUDA %q", len(r.GPUs), r.CUDAVersion)
	}
	g := r.GPUs[0]
	if !strings.Contains(g.Name, "A100") || g.UUID == "" || g.Serial != "1321020000000" || g.MemoryMiB == 0 || g.Driver != "550.54.15" || g.ECC != "enabled" || g.MIG == "" {
		t.Fatalf("GPU 0: %+v", g)
	}
	if c, ok := r.Get(rep.CheckNVML); !ok || c.Status != rep.OK {
		t.Fatalf("nvml check %+v", c)
	}
	if c, ok := r.Get(rep.CheckGPUHealth); !ok || c.Status != rep.OK {
		t.Fatalf("health check %+v", c)
	}
}

// healthy makes the mock's GPUs answer ECC mode and the health queries as healthy GPUs do.
func healthy(srv *dgxa100.Server) {
	for i, d := range srv.Devices {
		dev := d.(*dgxa100.Device)
		serial := fmt.Sprintf("132102000%04d", i)
		dev.GetSerialFunc = func() (string, nvml.Return) { return serial, nvml.SUCCESS }
		dev.GetEccModeFunc = func() (nvml.EnableState, nvml.EnableState, nvml.Return) {
			return nvml.FEATURE_ENABLED, nvml.FEATURE_ENABLED, nvml.SUCCESS
		}
		dev.GetTotalEccErrorsFunc = func(nvml.MemoryErrorType, nvml.EccCounterType) (uint64, nvml.Return) { return 0, nvml.SUCCESS }
		dev.GetRemappedRowsFunc = func() (int, int, bool, bool, nvml.Return) { return 0, 0, false, false, nvml.SUCCESS }
		dev.GetRetiredPagesPendingStatusFunc = func() (nvml.EnableState, nvml.Return) { return nvml.FEATURE_DISABLED, nvml.SUCCESS }
		dev.GetCurrentClocksEventReasonsFunc = func() (uint64, nvml.Return) { return nvml.ClocksEventReasonGpuIdle, nvml.SUCCESS }
		dev.GetPersistenceModeFunc = func() (nvml.EnableState, nvml.Return) { return nvml.FEATURE_ENABLED, nvml.SUCCESS }
		// An A100 SXM has 12 NVLink links, all up.
		dev.GetNvLinkStateFunc = func(link int) (nvml.EnableState, nvml.Return) {
			if link < 12 {
				return nvml.FEATURE_ENABLED, nvml.SUCCESS
			}
			return 0, nvml.ERROR_INVALID_ARGUMENT
		}
	}
}

// TestNVMLHealthFaults: the mock's GPUs answering faults — uncorrectable ECC errors with a row
// remapping pending on one, a failed remapping on another, a thermal slowdown on a third, and
// a GPU that does not support the queries — give each GPU's fields and the health check the
// action the worst calls for.
func TestNVMLHealthFaults(t *testing.T) {
	root := filepath.Join(t.TempDir(), "root")
	if err := hostconfigtest.Build("ubuntu2404-containerd2", root, 0); err != nil {
		t.Fatal(err)
	}
	srv := dgxa100.New()
	healthy(srv)
	d0, d1, d2, d3 := srv.Devices[0].(*dgxa100.Device), srv.Devices[1].(*dgxa100.Device), srv.Devices[2].(*dgxa100.Device), srv.Devices[3].(*dgxa100.Device)
	d0.GetTotalEccErrorsFunc = func(typ nvml.MemoryErrorType, c nvml.EccCounterType) (uint64, nvml.Return) {
		if typ == nvml.MEMORY_ERROR_TYPE_UNCORRECTED && c == nvml.VOLATILE_ECC {
			return 2, nvml.SUCCESS
		}
		return 0, nvml.SUCCESS
	}
	d0.GetRemappedRowsFunc = func() (int, int, bool, bool, nvml.Return) { return 0, 1, true, false, nvml.SUCCESS }
	d1.GetRemappedRowsFunc = func() (int, int, bool, bool, nvml.Return) { return 0, 8, false, true, nvml.SUCCESS }
	d2.GetCurrentClocksEventReasonsFunc = func() (uint64, nvml.Return) {
		return nvml.ClocksThrottleReasonHwThermalSlowdown | nvml.ClocksThrottleReasonHwSlowdown, nvml.SUCCESS
	}
	d3.GetRemappedRowsFunc = func() (int, int, bool, bool, nvml.Return) { return 0, 0, false, false, nvml.ERROR_NOT_SUPPORTED }
	d3.GetNvLinkStateFunc = func(int) (nvml.EnableState, nvml.Return) { return 0, nvml.ERROR_NOT_SUPPORTED }
	// Link 3 of GPU 4 inactive (after an XID 74); GPU 5's persistence off, 3 uncorrectable
	// ECC errors over its life.
	d4, d5 := srv.Devices[4].(*dgxa100.Device), srv.Devices[5].(*dgxa100.Device)
	d4.GetNvLinkStateFunc = func(link int) (nvml.EnableState, nvml.Return) {
		switch {
		case link == 3:
			return nvml.FEATURE_DISABLED, nvml.SUCCESS
		case link < 12:
			return nvml.FEATURE_ENABLED, nvml.SUCCESS
		}
		return 0, nvml.ERROR_INVALID_ARGUMENT
	}
	d5.GetPersistenceModeFunc = func() (nvml.EnableState, nvml.Return) { return nvml.FEATURE_DISABLED, nvml.SUCCESS }
	d5.GetTotalEccErrorsFunc = func(typ nvml.MemoryErrorType, c nvml.EccCounterType) (uint64, nvml.Return) {
		if typ == nvml.MEMORY_ERROR_TYPE_UNCORRECTED && c == nvml.AGGREGATE_ECC {
			return 3, nvml.SUCCESS
		}
		return 0, nvml.SUCCESS
	}
	info := nvmlInfo(&hostconfig.Host{Root: root}, func(*hostconfig.Host) (nvml.Interface, error) { return srv, nil })
	r := rep.New("test", hostconfig.ModeCheck)
	if err := info(r); err != nil {
		t.Fatal(err)
	}
	g := r.GPUs
	if g[0].ECCUncorrectable != 2 || !g[0].RowRemapPending || g[0].RowRemapFailed || !g[1].RowRemapFailed ||
		strings.Join(g[2].Slowdown, ",") != "hardware slowdown,thermal" || g[3].RowRemapPending || g[4].ECCUncorrectable != 0 {
		t.Fatalf("GPUs: %+v", g[:5])
	}
	if g[0].NVLinks != 12 || g[3].NVLinks != 0 || g[4].NVLinks != 11 || fmt.Sprint(g[4].NVLinksDown) != "[3]" || g[5].Persistence != "disabled" || g[0].Persistence != "enabled" || g[5].ECCAggregateUncorrectable != 3 {
		t.Errorf("NVLink, persistence, lifetime ECC: %+v", g[:6])
	}
	c, _ := r.Get(rep.CheckGPUHealth)
	if !strings.Contains(c.Message, g[4].PCIAddress+": NVLink 3 inactive (11 of 12 links up)") {
		t.Errorf("health check without GPU 4's link: %+v", c)
	}
	if c.Status != rep.Fail || !strings.Contains(c.Remediation, "serviced") ||
		!strings.Contains(c.Message, g[1].PCIAddress+": row remapping failed") ||
		!strings.Contains(c.Message, g[0].PCIAddress+": row remapping pending (applied at the next GPU reset), 2 uncorrectable ECC errors since the driver loaded") ||
		!strings.Contains(c.Message, "hardware slowdown: hardware slowdown, thermal") {
		t.Fatalf("health check: %+v", c)
	}
}

func TestNVMLMissingLibraryIsReportedNotFatal(t *testing.T) {
	root := filepath.Join(t.TempDir(), "root")
	if err := hostconfigtest.Build("k3s", root, 1); err != nil {
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
