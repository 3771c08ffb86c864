package hostconfig

import (
	"fmt"
	"strings"

	"github.com/NVIDIA/go-nvlib/pkg/nvpci"

	rep "github.com/kubectl-gpu/kubectl-gpu/common/nodereport"
)

// FabricManager is the process of NVIDIA Fabric Manager (the nvidia-fabricmanager service, or
// the GPU Operator's driver container), which an NVSwitch system needs before CUDA can use its
// GPUs.
const FabricManager = "nv-fabricmanager"

// running tells whether a process of that name runs on the host (its /proc: the agent's pod
// shares the host's PID namespace).
func (h *Host) running(comm string) bool {
	for _, p := range h.Glob("/proc/[0-9]*/comm") {
		if s, ok := h.Read(p); ok && strings.TrimSpace(s) == comm {
			return true
		}
	}
	return false
}

// checkFabricManager: on a system whose GPUs talk through NVSwitches, CUDA does not start
// ("system not yet initialized", error 802) until Fabric Manager has set up the fabric.
func checkFabricManager(h *Host, r *rep.Report) {
	if len(r.GPUs) == 0 {
		r.Add(rep.CheckFabricManager, rep.Skipped, "no NVIDIA GPU", "")
		return
	}
	var switches []*nvpci.NvidiaPCIDevice
	if h.Exists(nvpci.PCIDevicesRoot) {
		switches, _ = nvpci.New(nvpci.WithPCIDevicesRoot(h.Path(nvpci.PCIDevicesRoot)), nvpci.WithLogger(quiet{})).GetNVSwitches()
	}
	switch {
	case len(switches) == 0:
		r.Add(rep.CheckFabricManager, rep.Skipped, "no NVSwitch on the PCI bus: no Fabric Manager needed", "")
	case h.running(FabricManager):
		r.Add(rep.CheckFabricManager, rep.OK, fmt.Sprintf("%d NVSwitches, Fabric Manager running", len(switches)), "")
	default:
		r.Add(rep.CheckFabricManager, rep.Fail, fmt.Sprintf("%d NVSwitches on the PCI bus and no Fabric Manager running (no %s process): CUDA does not start on these GPUs (system not yet initialized)", len(switches), FabricManager),
			"start it: systemctl enable --now nvidia-fabricmanager (the package of the driver's exact version), or let the GPU Operator's driver container run it")
	}
}
