package nodeagent

import (
	"fmt"
	"path/filepath"

	"github.com/NVIDIA/go-nvml/pkg/nvml"

	"github.com/kubectl-gpu/kubectl-gpu/common/hostconfig"
	rep "github.com/kubectl-gpu/kubectl-gpu/common/nodereport"
	"github.com/kubectl-gpu/kubectl-gpu/common/remedy"
)

// libDirs are where distributions install libnvidia-ml.so.1.
var libDirs = []string{"/usr/lib/x86_64-linux-gnu", "/usr/lib/aarch64-linux-gnu", "/usr/lib64", "/usr/lib", "/run/nvidia/driver/usr/lib/x86_64-linux-gnu"}

// newNVML opens the host's NVML library found under the host root.
func newNVML(h *hostconfig.Host) (nvml.Interface, error) {
	for _, d := range libDirs {
		p := h.Path(filepath.Join(d, "libnvidia-ml.so.1"))
		if _, err := filepath.EvalSymlinks(p); err == nil {
			return nvml.New(nvml.WithLibraryPath(p)), nil
		}
	}
	return nil, fmt.Errorf("libnvidia-ml.so.1 not found under %s", h.Root)
}

// nvmlInfo returns the hook that adds NVML's view of the GPUs to the report: names, UUIDs,
// memory, driver and CUDA versions, MIG mode and ECC. open is replaced in tests by go-nvml's
// dgxa100 mock.
func nvmlInfo(h *hostconfig.Host, open func(*hostconfig.Host) (nvml.Interface, error)) hostconfig.GPUInfo {
	return func(r *rep.Report) error {
		lib, err := open(h)
		if err != nil {
			return err
		}
		if ret := lib.Init(); ret != nvml.SUCCESS {
			return fmt.Errorf("cannot initialise NVML: %s", nvml.ErrorString(ret))
		}
		defer lib.Shutdown()
		driver, ret := lib.SystemGetDriverVersion()
		if ret != nvml.SUCCESS {
			return fmt.Errorf("driver version: %s", nvml.ErrorString(ret))
		}
		cuda, ret := lib.SystemGetCudaDriverVersion()
		if ret == nvml.SUCCESS {
			r.CUDAVersion = fmt.Sprintf("%d.%d", cuda/1000, (cuda%1000)/10)
		}
		n, ret := lib.DeviceGetCount()
		if ret != nvml.SUCCESS {
			return fmt.Errorf("device count: %s", nvml.ErrorString(ret))
		}
		byAddr := map[string]int{}
		for i, g := range r.GPUs {
			byAddr[g.PCIAddress] = i
		}
		for i := 0; i < n; i++ {
			d, ret := lib.DeviceGetHandleByIndex(i)
			if ret != nvml.SUCCESS {
				continue
			}
			g := rep.GPU{Driver: driver}
			g.Name, _ = d.GetName()
			g.UUID, _ = d.GetUUID()
			if sn, ret := d.GetSerial(); ret == nvml.SUCCESS {
				g.Serial = sn
			}
			if mem, ret := d.GetMemoryInfo(); ret == nvml.SUCCESS {
				g.MemoryMiB = mem.Total / (1 << 20)
			}
			if cur, _, ret := d.GetMigMode(); ret == nvml.SUCCESS {
				g.MIG = map[int]string{nvml.DEVICE_MIG_ENABLE: "enabled", nvml.DEVICE_MIG_DISABLE: "disabled"}[cur]
			}
			if cur, _, ret := d.GetEccMode(); ret == nvml.SUCCESS {
				g.ECC = map[nvml.EnableState]string{nvml.FEATURE_ENABLED: "enabled", nvml.FEATURE_DISABLED: "disabled"}[cur]
			}
			if pci, ret := d.GetPciInfo(); ret == nvml.SUCCESS {
				g.PCIAddress = busID(pci)
				g.DeviceID = fmt.Sprintf("10de:%04x", pci.PciDeviceId>>16)
			}
			readHealth(d, &g)
			if j, ok := byAddr[g.PCIAddress]; ok {
				pci, dev, slot := r.GPUs[j].PCIAddress, r.GPUs[j].DeviceID, r.GPUs[j].Slot
				r.GPUs[j] = g
				r.GPUs[j].PCIAddress, r.GPUs[j].DeviceID, r.GPUs[j].Slot = pci, dev, slot
			} else {
				r.GPUs = append(r.GPUs, g)
			}
		}
		r.Add(rep.CheckNVML, rep.OK, fmt.Sprintf("NVML: %d GPU(s), driver %s, CUDA %s", n, driver, r.CUDAVersion), "")
		// NODE: the agent does not know its node's name; doctor puts it in.
		switch summary, action := rep.Health(r.GPUs); action {
		case remedy.None:
			r.Add(rep.CheckGPUHealth, rep.OK, summary, "")
		case remedy.Watch:
			r.Add(rep.CheckGPUHealth, rep.Warn, summary, rep.HealthFix(action, "NODE"))
		case remedy.ResetGPU, remedy.Service:
			r.Add(rep.CheckGPUHealth, rep.Fail, summary, rep.HealthFix(action, "NODE"))
		}
		return nil
	}
}

// slowdowns are the clock event reasons that mean the hardware holds the GPU back.
var slowdowns = []struct {
	bit  uint64
	name string
}{
	{nvml.ClocksThrottleReasonHwSlowdown, "hardware slowdown"},
	{nvml.ClocksThrottleReasonHwThermalSlowdown, "thermal"},
	{nvml.ClocksThrottleReasonHwPowerBrakeSlowdown, "power brake"},
	{nvml.ClocksEventReasonSwThermalSlowdown, "software thermal"},
}

// readHealth adds what NVML says of the GPU's health: uncorrectable ECC errors (volatile, and
// over its life), row remapping, pending page retirement, persistence mode, NVLink links
// active and inactive, hardware slowdowns. A query the GPU does not support
// leaves its field empty.
func readHealth(d nvml.Device, g *rep.GPU) {
	if n, ret := d.GetTotalEccErrors(nvml.MEMORY_ERROR_TYPE_UNCORRECTED, nvml.VOLATILE_ECC); ret == nvml.SUCCESS {
		g.ECCUncorrectable = n
	}
	if _, _, pending, failed, ret := d.GetRemappedRows(); ret == nvml.SUCCESS {
		g.RowRemapPending, g.RowRemapFailed = pending, failed
	}
	if st, ret := d.GetRetiredPagesPendingStatus(); ret == nvml.SUCCESS {
		g.RetiredPagesPending = st == nvml.FEATURE_ENABLED
	}
	if n, ret := d.GetTotalEccErrors(nvml.MEMORY_ERROR_TYPE_UNCORRECTED, nvml.AGGREGATE_ECC); ret == nvml.SUCCESS {
		g.ECCAggregateUncorrectable = n
	}
	if m, ret := d.GetPersistenceMode(); ret == nvml.SUCCESS {
		g.Persistence = map[nvml.EnableState]string{nvml.FEATURE_ENABLED: "enabled", nvml.FEATURE_DISABLED: "disabled"}[m]
	}
	// NVLink: a link the GPU does not have answers not supported (or an invalid argument).
	for link := 0; link < nvml.NVLINK_MAX_LINKS; link++ {
		st, ret := d.GetNvLinkState(link)
		if ret != nvml.SUCCESS {
			continue
		}
		if st == nvml.FEATURE_ENABLED {
			g.NVLinks++
		} else {
			g.NVLinksDown = append(g.NVLinksDown, link)
		}
	}
	if reasons, ret := d.GetCurrentClocksEventReasons(); ret == nvml.SUCCESS {
		for _, s := range slowdowns {
			if reasons&s.bit != 0 {
				g.Slowdown = append(g.Slowdown, s.name)
			}
		}
	}
}

// busID formats NVML's PCI bus ID the way sysfs names devices (0000:07:00.0).
func busID(p nvml.PciInfo) string {
	b := make([]byte, 0, len(p.BusIdLegacy))
	for _, c := range p.BusIdLegacy {
		if c == 0 {
			break
		}
		b = append(b, byte(c))
	}
	s := string(b)
	if len(s) > 12 {
		s = s[len(s)-12:]
	}
	return toLower(s)
}

func toLower(s string) string {
	out := []byte(s)
	for i, c := range out {
		if c >= 'A' && c <= 'Z' {
			out[i] = c + 32
		}
	}
	return string(out)
}
