// Package nodereport is the schema the node agent prints and the plugin reads: one
// NodeReport per node, with a named check per thing that matters for GPUs.
package nodereport

import (
	"encoding/json"
	"fmt"
	"strings"

	"github.com/kubectl-gpu/kubectl-gpu/common/xid"

	"github.com/kubectl-gpu/kubectl-gpu/common/docmeta"
)

// Kind and SchemaVersion of the report. The plugin refuses a report whose schema version it
// does not know: newer than its own, or older than OldestSchemaVersion.
const (
	Kind = "NodeReport"
	// SchemaVersion 2: an XID's action is a remedy token ("reset"); schema 1 wrote the
	// phrase ("drain and reset the GPU"), which is still read as the same step.
	SchemaVersion       = 2
	OldestSchemaVersion = 1
)

// Mode is what the agent is asked to do.
type Mode string

// Modes of the node agent.
const (
	ModeCheck Mode = "check" // read-only
	ModePlan  Mode = "plan"  // read-only: the changes apply would make
	ModeApply Mode = "apply" // change the host, then check again
	// ModeReboot asks the host's systemd to reboot a moment after the report is printed
	// (only when the host's boot ID is still the one given: a reboot pod run again after
	// the reboot does nothing).
	ModeReboot Mode = "reboot"
)

// Flavour is the Kubernetes distribution the agent found on the host.
type Flavour string

// The flavours the agent tells apart from the host's files.
const (
	FlavourKubeadm Flavour = "kubeadm"
	FlavourRKE2    Flavour = "rke2"
	FlavourK3s     Flavour = "k3s"
	FlavourUnknown Flavour = "unknown"
)

// Status of a check.
type Status string

// Check statuses.
const (
	OK      Status = "ok"
	Warn    Status = "warn"
	Fail    Status = "fail"
	Fixed   Status = "fixed"
	Skipped Status = "skipped"
)

// Check IDs: stable names runbooks can match.
const (
	CheckOS            = "os"
	CheckFlavour       = "flavour"
	CheckPCI           = "gpu.pci"
	CheckDriver        = "gpu.driver"
	CheckNVML          = "gpu.nvml"
	CheckGPUHealth     = "gpu.health"
	CheckNouveau       = "nouveau"
	CheckSecureBoot    = "secureboot"
	CheckHeaders       = "kernel.headers"
	CheckToolkit       = "toolkit"
	CheckContainerd    = "containerd.config"
	CheckSystemdCgroup = "containerd.systemdcgroup"
	CheckNvidiaRuntime = "containerd.nvidia-runtime"
	CheckCgroupDriver  = "kubelet.cgroupdriver"
	CheckModules       = "kernel.modules"
	CheckSysctl        = "sysctl"
	CheckSwap          = "swap"
	CheckDevChar       = "toolkit.dev-char"
	// CheckXID: the XIDs the driver logged since boot (kernel log).
	CheckXID = "gpu.xid"
	// CheckDriverLibraries: the loaded module against the host's NVML library.
	CheckDriverLibraries = "gpu.driver-libraries"
	// CheckDriverKernels: a newer kernel installed without the NVIDIA module.
	CheckDriverKernels = "gpu.driver-kernels"
	// CheckCDI: the CDI spec of the GPUs.
	CheckCDI = "toolkit.cdi"
	// CheckKubeletPlugins: the NVIDIA plugins registered with the kubelet (their sockets).
	CheckKubeletPlugins = "kubelet.plugins"
	// CheckFabricManager: Fabric Manager running where NVSwitches are.
	CheckFabricManager = "gpu.fabricmanager"
)

// Check is one finding.
type Check struct {
	ID          string `json:"id"`
	Status      Status `json:"status"`
	Message     string `json:"message"`
	Remediation string `json:"remediation,omitempty"`
}

// GPU is one GPU found on the node.
type GPU struct {
	PCIAddress string `json:"pciAddress"`
	DeviceID   string `json:"deviceID"`
	Name       string `json:"name,omitempty"`
	UUID       string `json:"uuid,omitempty"`
	// Serial is the board's serial number as NVML reads it (for a service request).
	Serial string `json:"serial,omitempty"`
	// Slot is the physical slot the GPU sits in, from the PCI slots in sysfs.
	Slot      string `json:"slot,omitempty"`
	MemoryMiB uint64 `json:"memoryMiB,omitempty"`
	MIG       string `json:"mig,omitempty"`
	ECC       string `json:"ecc,omitempty"`
	Driver    string `json:"driver,omitempty"`
	// Health as NVML reads it (omitted where NVML did not answer): uncorrectable ECC errors
	// since the driver loaded, row remapping pending or failed, retired pages pending, the
	// hardware slowdowns in effect.
	ECCUncorrectable    uint64   `json:"eccUncorrectable,omitempty"`
	RowRemapPending     bool     `json:"rowRemapPending,omitempty"`
	RowRemapFailed      bool     `json:"rowRemapFailed,omitempty"`
	RetiredPagesPending bool     `json:"retiredPagesPending,omitempty"`
	Slowdown            []string `json:"slowdown,omitempty"`
	// ECCAggregateUncorrectable counts uncorrectable ECC errors over the GPU's life.
	ECCAggregateUncorrectable uint64 `json:"eccAggregateUncorrectable,omitempty"`
	// Persistence is the persistence mode (enabled, disabled; "" unknown).
	Persistence string `json:"persistence,omitempty"`
	// NVLinks counts the GPU's active NVLink links; NVLinksDown lists the inactive ones.
	NVLinks     int   `json:"nvlinks,omitempty"`
	NVLinksDown []int `json:"nvlinksDown,omitempty"`
}

// Change is one thing apply changes (or would change).
type Change struct {
	Check string `json:"check"`
	// File changed, with a unified diff; or Command run in the host's namespaces.
	File    string   `json:"file,omitempty"`
	Diff    string   `json:"diff,omitempty"`
	Command []string `json:"command,omitempty"`
	// Packages a package install installs (plan: as the host's package manager resolved
	// them; apply: as installed).
	Packages []Package `json:"packages,omitempty"`
	Note     string    `json:"note,omitempty"`
	Done     bool      `json:"done"`
	Error    string    `json:"error,omitempty"`
}

// Package is a host package and its version.
type Package struct {
	Name    string `json:"name"`
	Version string `json:"version"`
	// Replaces is the installed version an upgrade replaces.
	Replaces string `json:"replaces,omitempty"`
}

// DriverTarget is the driver version a change installs: the version of its first package of
// the branch (the distribution's revision dropped), else "branch B" ("" when neither says).
func DriverTarget(pkgs []Package, branch string) string {
	for _, p := range pkgs {
		if strings.HasPrefix(p.Name, "linux-") || !strings.Contains(p.Name, "nvidia") && !strings.HasPrefix(p.Name, "cuda-drivers") {
			continue // a kernel's modules carry the kernel's version
		}
		if v := UpstreamVersion(p.Version); v != "" && (branch == "" || strings.HasPrefix(v, branch+".")) {
			return v
		}
	}
	if branch != "" {
		return "branch " + branch
	}
	return ""
}

// UpstreamVersion drops a package version's epoch and distribution revision (1:580.95.05-0ubuntu1
// → 580.95.05).
func UpstreamVersion(v string) string {
	if i := strings.Index(v, ":"); i >= 0 {
		v = v[i+1:]
	}
	if i := strings.Index(v, "-"); i >= 0 {
		v = v[:i]
	}
	return v
}

// Who judged whether containerd loads its configuration.
const (
	// JudgeContainerd: the host's own containerd loaded the files (`containerd config dump`).
	JudgeContainerd = "containerd"
	// JudgeModel: no containerd binary could be run (a distroless host, a simulated one):
	// the tool's model of that release's loader answered.
	JudgeModel = "model"
)

// ContainerdLoad is what containerd makes of its configuration files.
type ContainerdLoad struct {
	Judge string `json:"judge"`
	// Binary is the containerd that judged (judge containerd).
	Binary string `json:"binary,omitempty"`
	// Release is the containerd version the answer is for; ReleaseGuessed when neither the
	// binary nor the packages said it (then it is what the root config's version implies).
	Release        string `json:"release,omitempty"`
	ReleaseGuessed bool   `json:"releaseGuessed,omitempty"`
	// Files containerd reads, in its order.
	Files []string `json:"files,omitempty"`
	// Version is the config version containerd runs with.
	Version int  `json:"version,omitempty"`
	Loads   bool `json:"loads"`
	// Error is the loader's refusal (containerd does not start with these files).
	Error string `json:"error,omitempty"`
	// NotRun says why the host's containerd, which is there, could not be run (then the
	// model answered).
	NotRun string `json:"notRun,omitempty"`
}

// Report is what the agent prints.
type Report struct {
	docmeta.TypeMeta `json:",inline"`
	SchemaVersion    int    `json:"schemaVersion"`
	AgentVersion     string `json:"agentVersion"`
	Node             string `json:"node,omitempty"`
	Mode             Mode   `json:"mode"`
	OS               string `json:"os"`
	Kernel           string `json:"kernel"`
	Arch             string `json:"arch"`
	// BootID is the host's boot ID (the kubelet's status.nodeInfo.bootID).
	BootID        string  `json:"bootID,omitempty"`
	Flavour       Flavour `json:"flavour"`
	DriverVersion string  `json:"driverVersion,omitempty"`
	// DriverPackage is the host driver version its package manager has installed (dpkg's
	// status; "" none, or not known on rpm hosts): with no driver loaded, a kernel module that
	// did not load.
	DriverPackage  string `json:"driverPackage,omitempty"`
	CUDAVersion    string `json:"cudaVersion,omitempty"`
	ToolkitVersion string `json:"toolkitVersion,omitempty"`
	// ContainerdConfigVersion is the root config's version, 1 to 4 (0: not found).
	ContainerdConfigVersion int `json:"containerdConfigVersion,omitempty"`
	// Containerd is how containerd loads the configuration and who said so.
	Containerd    *ContainerdLoad `json:"containerd,omitempty"`
	NvidiaRuntime bool            `json:"nvidiaRuntime"`
	// DefaultRuntime is containerd's default runtime handler ("" when no config was read).
	DefaultRuntime string `json:"defaultRuntime,omitempty"`
	// CDI: containerd's CRI plugin injects CDI devices (enable_cdi).
	CDI  bool  `json:"cdi,omitempty"`
	GPUs []GPU `json:"gpus"`
	// XIDs are the driver's error events since boot, from the kernel log.
	XIDs []xid.Event `json:"xids,omitempty"`
	// KubeletPlugins are the sockets of the NVIDIA plugins registered with the kubelet
	// (device plugins, DRA kubelet plugins).
	KubeletPlugins []string `json:"kubeletPlugins,omitempty"`
	Checks         []Check  `json:"checks"`
	Changes        []Change `json:"changes,omitempty"`
	// Reboot says why the node needs a reboot for its changes to take effect ("" none).
	Reboot string `json:"reboot,omitempty"`
	// Error is why the agent stopped (a plan-time refusal, a failed install).
	Error string `json:"error,omitempty"`
}

// New returns an empty report of the current schema.
func New(agentVersion string, mode Mode) *Report {
	return &Report{TypeMeta: docmeta.Meta(Kind), SchemaVersion: SchemaVersion, AgentVersion: agentVersion, Mode: mode, GPUs: []GPU{}, Checks: []Check{}}
}

// Last is the last check of that ID recorded (nil none), to amend.
func (r *Report) Last(id string) *Check {
	for i := len(r.Checks) - 1; i >= 0; i-- {
		if r.Checks[i].ID == id {
			return &r.Checks[i]
		}
	}
	return nil
}

// Add records a check.
func (r *Report) Add(id string, st Status, msg, fix string) {
	r.Checks = append(r.Checks, Check{ID: id, Status: st, Message: msg, Remediation: fix})
}

// Get returns the check with id.
func (r *Report) Get(id string) (Check, bool) {
	for _, c := range r.Checks {
		if c.ID == id {
			return c, true
		}
	}
	return Check{}, false
}

// Ready tells whether no check failed.
func (r *Report) Ready() bool {
	for _, c := range r.Checks {
		if c.Status == Fail {
			return false
		}
	}
	return true
}

// Parse reads a report from the agent's output, refusing other kinds and schema versions.
func Parse(b []byte) (*Report, error) {
	var r Report
	if err := json.Unmarshal(b, &r); err != nil {
		return nil, fmt.Errorf("the node agent's output is not a JSON report: %w", err)
	}
	if r.Kind != Kind || r.APIVersion != docmeta.APIVersion {
		return nil, fmt.Errorf("the node agent printed %s %s, not a %s %s", r.APIVersion, r.Kind, docmeta.APIVersion, Kind)
	}
	if r.SchemaVersion < OldestSchemaVersion || r.SchemaVersion > SchemaVersion {
		return nil, fmt.Errorf("the node agent %s speaks report schema %d, this plugin schemas %d to %d: use the agent image that matches the plugin (kubectl gpu version), or --image", r.AgentVersion, r.SchemaVersion, OldestSchemaVersion, SchemaVersion)
	}
	return &r, nil
}

// Paths and words the agent's checks and the cluster side both use (kept here: the plugin,
// built for every OS, must not import the agent's host code).
const (
	// NoCDISpec starts the message of a host without a CDI spec for its GPUs.
	NoCDISpec = "no CDI spec for nvidia.com/gpu"
	// CDIGenerate is the command that writes the GPUs' CDI spec (the toolkit's
	// nvidia-cdi-refresh service runs it at boot and when the driver changes).
	CDIGenerate = "nvidia-ctk cdi generate --output=/var/run/cdi/nvidia.yaml"
	// DevicePluginDir and PluginRegistryDir are where the kubelet keeps the sockets of the
	// plugins registered with it: device plugins (nvidia-gpu.sock; nvidia-mig-*.sock with
	// MIG's mixed strategy) and, through the plugin watcher, DRA kubelet plugins
	// (gpu.nvidia.com-reg.sock).
	DevicePluginDir   = "/var/lib/kubelet/device-plugins"
	PluginRegistryDir = "/var/lib/kubelet/plugins_registry"
)

// CDISpecDirs are where containerd reads CDI specs by default (cdi_spec_dirs), in priority
// order: a device in a later directory overrides one of the same name in an earlier one.
var CDISpecDirs = []string{"/etc/cdi", "/var/run/cdi"}
