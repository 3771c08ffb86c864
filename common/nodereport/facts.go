package nodereport

import (
	"crypto/sha256"
	"encoding/hex"
	"strconv"
	"time"

	"github.com/kubectl-gpu/kubectl-gpu/common/remedy"
)

// The node annotations prep writes from a report: the product's central contract. operator
// values, device-plugin, doctor, inventory and up read them; this is their one home.
const (
	// AnnotationPrefix is the prefix of every annotation and label this tool writes on nodes.
	AnnotationPrefix = "gpu.kubectl-gpu.io/"

	AnnotationFlavour = AnnotationPrefix + "flavour"
	AnnotationDriver  = AnnotationPrefix + "driver-version"
	// AnnotationDriverInstalled is the host driver version installed by its package manager,
	// written only while no driver is loaded (a module that did not load).
	AnnotationDriverInstalled = AnnotationPrefix + "driver-installed"
	AnnotationToolkit         = AnnotationPrefix + "toolkit-version"
	AnnotationNvidiaRuntime   = AnnotationPrefix + "nvidia-runtime"
	// AnnotationContainerdConfigVersion is the root containerd config's version.
	AnnotationContainerdConfigVersion = AnnotationPrefix + "containerd-config-version"
	// AnnotationDefaultRuntime is containerd's default runtime handler on the node.
	AnnotationDefaultRuntime = AnnotationPrefix + "containerd-default-runtime"
	// AnnotationCDI is "true" when the node's containerd injects CDI devices.
	AnnotationCDI = AnnotationPrefix + "containerd-cdi"
	// AnnotationGPUs is the number of NVIDIA GPUs prep found on the node's PCI bus.
	AnnotationGPUs = AnnotationPrefix + "gpus"
	// AnnotationMIG is "enabled" when any GPU of the node has MIG mode on.
	AnnotationMIG = AnnotationPrefix + "mig"
	// AnnotationGPUHealth is the step the GPUs' health (NVML) calls for, a remedy token: none,
	// watch, reset, service (earlier releases wrote ok and warn, still read);
	// AnnotationGPUHealthDetail says what is wrong.
	AnnotationGPUHealth       = AnnotationPrefix + "gpu-health"
	AnnotationGPUHealthDetail = AnnotationPrefix + "gpu-health-detail"
	// AnnotationReportedAt is when prep last reported on the node: a node without it was
	// never checked.
	AnnotationReportedAt = AnnotationPrefix + "reported-at"
)

// Facts are what prep records on a node from its agent's report.
type Facts struct {
	Flavour       Flavour
	DriverVersion string
	// DriverInstalled is the host driver version installed by the package manager while no
	// driver is loaded ("" otherwise).
	DriverInstalled         string
	ToolkitVersion          string
	NvidiaRuntime           bool
	ContainerdConfigVersion int
	DefaultRuntime          string
	CDI                     bool
	GPUs                    int
	// MIG is "enabled", "disabled" or "" (unknown: no driver).
	MIG string
	// GPUHealth is the step the GPUs' health calls for (remedy.Unknown when NVML did not
	// answer); GPUHealthDetail what is wrong (only when there is something to do).
	GPUHealth       remedy.Action
	GPUHealthDetail string
	ReportedAt      time.Time
}

// maxDetail is the longest health detail written (an annotation is not a log).
const maxDetail = 1000

// FactsOf are the facts of a report made at now.
func FactsOf(r *Report, now time.Time) Facts {
	f := Facts{Flavour: r.Flavour, DriverVersion: r.DriverVersion, ToolkitVersion: r.ToolkitVersion, NvidiaRuntime: r.NvidiaRuntime,
		ContainerdConfigVersion: r.ContainerdConfigVersion, DefaultRuntime: r.DefaultRuntime, CDI: r.CDI, GPUs: len(r.GPUs),
		MIG: migMode(r.GPUs), ReportedAt: now.UTC().Truncate(time.Second)}
	if r.DriverVersion == "" {
		f.DriverInstalled = r.DriverPackage
	}
	summary, action := Health(r.GPUs)
	f.GPUHealth = action
	if action > remedy.None {
		f.GPUHealthDetail = fit(summary, maxDetail)
	}
	return f
}

// Annotations is the merge patch's annotations: every key set, or nil (removed) where the
// fact is unknown, so that a node's annotations always say its last report.
func (f Facts) Annotations() map[string]any {
	orNil := func(s string) any {
		if s == "" {
			return nil
		}
		return s
	}
	a := map[string]any{
		AnnotationFlavour:                 string(f.Flavour),
		AnnotationDriver:                  orNil(f.DriverVersion),
		AnnotationDriverInstalled:         orNil(f.DriverInstalled),
		AnnotationToolkit:                 orNil(f.ToolkitVersion),
		AnnotationNvidiaRuntime:           strconv.FormatBool(f.NvidiaRuntime),
		AnnotationContainerdConfigVersion: nil,
		AnnotationDefaultRuntime:          orNil(f.DefaultRuntime),
		AnnotationCDI:                     strconv.FormatBool(f.CDI),
		AnnotationGPUs:                    strconv.Itoa(f.GPUs),
		AnnotationMIG:                     orNil(f.MIG),
		AnnotationGPUHealth:               orNil(f.GPUHealth.Token()),
		AnnotationGPUHealthDetail:         orNil(f.GPUHealthDetail),
		AnnotationReportedAt:              f.ReportedAt.UTC().Format(time.RFC3339),
	}
	if f.Flavour == FlavourUnknown {
		a[AnnotationFlavour] = nil
	}
	if f.ContainerdConfigVersion != 0 {
		a[AnnotationContainerdConfigVersion] = strconv.Itoa(f.ContainerdConfigVersion)
	}
	return a
}

// FactsFrom reads the facts from a node's annotations; ok is false when prep never reported
// on the node.
func FactsFrom(annotations map[string]string) (f Facts, ok bool) {
	a := annotations
	f.Flavour = Flavour(a[AnnotationFlavour])
	f.DriverVersion, f.DriverInstalled, f.ToolkitVersion = a[AnnotationDriver], a[AnnotationDriverInstalled], a[AnnotationToolkit]
	f.NvidiaRuntime = a[AnnotationNvidiaRuntime] == "true"
	f.ContainerdConfigVersion, _ = strconv.Atoi(a[AnnotationContainerdConfigVersion])
	f.DefaultRuntime, f.CDI = a[AnnotationDefaultRuntime], a[AnnotationCDI] == "true"
	f.GPUs, _ = strconv.Atoi(a[AnnotationGPUs])
	f.MIG, f.GPUHealth, f.GPUHealthDetail = a[AnnotationMIG], remedy.Parse(a[AnnotationGPUHealth]), a[AnnotationGPUHealthDetail]
	if t, err := time.Parse(time.RFC3339, a[AnnotationReportedAt]); err == nil {
		f.ReportedAt, ok = t, true
	}
	return f, ok
}

// migMode is "enabled" when any GPU has MIG on, "disabled" when NVML read the mode of some
// and none has it on, "" when no GPU's mode is known (no driver).
func migMode(gpus []GPU) string {
	mode := ""
	for _, g := range gpus {
		switch g.MIG {
		case "enabled":
			return "enabled"
		case "disabled":
			mode = "disabled"
		}
	}
	return mode
}

// fit cuts s to at most n bytes, ending it with a hash of the whole (as the tool fits names
// into object names), so that two long details stay apart.
func fit(s string, n int) string {
	if len(s) <= n {
		return s
	}
	sum := sha256.Sum256([]byte(s))
	return s[:n-11] + "-" + hex.EncodeToString(sum[:])[:10]
}
