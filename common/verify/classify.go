package verify

import (
	"fmt"
	"regexp"
	"strings"

	corev1 "k8s.io/api/core/v1"

	"github.com/kubectl-gpu/kubectl-gpu/common/cliexit"
	"github.com/kubectl-gpu/kubectl-gpu/common/nodepod"
)

// Result of one node.
type Result string

// Results.
const (
	Passed  Result = "Passed"
	Failed  Result = "Failed"
	Running Result = "Running" // not finished yet (only while the run goes on)
)

// Reason says why a node failed, in words a runbook can match.
type Reason string

// Failure reasons.
const (
	ReasonUnschedulable    Reason = "Unschedulable"
	ReasonImagePull        Reason = "ImagePull"
	ReasonRuntimeHandler   Reason = "RuntimeHandler"
	ReasonCUDAError        Reason = "CUDAError"
	ReasonContainerError   Reason = "ContainerError"
	ReasonNoTestPassed     Reason = "NoTestPassed"
	ReasonDeadlineExceeded Reason = "DeadlineExceeded"
	ReasonTimeout          Reason = "Timeout"
	ReasonNodeLost         Reason = "NodeLost"
	ReasonCreate           Reason = "CreateFailed"
	// DRA: no DeviceClass for the claim, no device left to allocate, the claim not
	// allocated in time, the driver's kubelet plugin not registered on the node.
	ReasonNoDeviceClass   Reason = "NoDeviceClass"
	ReasonNoDevice        Reason = "NoDeviceAvailable"
	ReasonClaimPending    Reason = "ClaimNotAllocated"
	ReasonDRAPluginAbsent Reason = "DRAPluginNotRegistered"
)

// PassMarker is what the CUDA vectoradd sample prints on success.
const PassMarker = "Test PASSED"

// Verdict is what classification decided about one pod.
type Verdict struct {
	Done   bool
	Result Result
	Reason Reason
	Detail string
	Hint   string
}

var cudaErrors = regexp.MustCompile(`(?i)(no CUDA-capable device|CUDA driver version is insufficient|cudaError\w*|CUDA error[^\n]*|Failed to allocate device vector[^\n]*|failed to initialize NVML[^\n]*|forward compatibility was attempted[^\n]*|system has unsupported display driver[^\n]*)`)

// Classify decides whether a pod passed, failed (and why), or is still going. It reads
// only the pod's status, its events and, once it finished, its log, as the engine observed
// them (image is the one asked for, to name in image pull failures): a pure function,
// tested over recorded failure shapes.
func Classify(o nodepod.Observation, image string) Verdict {
	log := string(o.Log)
	p := o.Pod
	if p == nil {
		return Verdict{Done: true, Result: Failed, Reason: ReasonNodeLost, Detail: "the pod was deleted before it finished (node lost, evicted or removed by someone else)", Hint: "check the node with 'kubectl describe node' and run verify again"}
	}
	// The DRA driver's kubelet plugin is not there to prepare the claim's devices.
	for _, e := range o.Events {
		if m := e.Message; e.Reason == "FailedPrepareDynamicResources" || strings.Contains(m, "is not registered") && strings.Contains(m, "driver") {
			return Verdict{Done: true, Result: Failed, Reason: ReasonDRAPluginAbsent, Detail: "the node cannot prepare the claim's GPUs: " + oneLine(m),
				Hint: "the DRA driver's kubelet plugin is not running on the node: check the nvidia-dra-driver-gpu kubelet-plugin pod there"}
		}
	}
	// Runtime handler missing: shows in sandbox events while the pod stays Pending.
	for _, e := range o.Events {
		if m := e.Message; strings.Contains(m, "no runtime for") || strings.Contains(m, "RuntimeHandler") && strings.Contains(m, "not") {
			return runtimeHandler(m)
		}
	}
	for _, cs := range append(append([]corev1.ContainerStatus{}, p.Status.InitContainerStatuses...), p.Status.ContainerStatuses...) {
		if w := cs.State.Waiting; w != nil {
			switch {
			case nodepod.ImagePullFailed(w):
				return Verdict{Done: true, Result: Failed, Reason: ReasonImagePull,
					Detail: fmt.Sprintf("image %s cannot be pulled: %s", firstNonEmpty(image, cs.Image), oneLine(firstNonEmpty(w.Message, w.Reason))),
					Hint:   "check the registry is reachable from the node and pull secrets; use --image for a mirror"}
			case w.Reason == "CreateContainerError" || w.Reason == "RunContainerError" || w.Reason == "CreateContainerConfigError" || w.Reason == "StartError":
				if strings.Contains(w.Message, "no runtime for") || strings.Contains(w.Message, "runtime handler") {
					return runtimeHandler(w.Message)
				}
				return Verdict{Done: true, Result: Failed, Reason: ReasonContainerError, Detail: fmt.Sprintf("%s: %s", w.Reason, oneLine(w.Message)),
					Hint: "see 'kubectl describe pod' for the container runtime's error"}
			}
		}
	}
	switch p.Status.Phase {
	case corev1.PodSucceeded:
		if strings.Contains(log, PassMarker) {
			return Verdict{Done: true, Result: Passed, Detail: PassMarker}
		}
		return Verdict{Done: true, Result: Failed, Reason: ReasonNoTestPassed, Detail: fmt.Sprintf("the pod succeeded but its log has no %q%s", PassMarker, lastLines(log)),
			Hint: "--image must be a CUDA vectoradd sample (or print what it prints)"}
	case corev1.PodFailed:
		if p.Status.Reason == "DeadlineExceeded" {
			return Verdict{Done: true, Result: Failed, Reason: ReasonDeadlineExceeded, Detail: "the pod ran past its activeDeadlineSeconds and was stopped",
				Hint: "the GPU may be hung or very slow: check 'nvidia-smi' on the node; raise --timeout"}
		}
		if p.Status.Reason == "NodeLost" || p.Status.Reason == "Evicted" || p.Status.Reason == "Terminated" {
			return Verdict{Done: true, Result: Failed, Reason: ReasonNodeLost, Detail: fmt.Sprintf("%s: %s", p.Status.Reason, oneLine(p.Status.Message)), Hint: "check the node's conditions with 'kubectl describe node'"}
		}
		if m := cudaErrors.FindString(log); m != "" {
			return Verdict{Done: true, Result: Failed, Reason: ReasonCUDAError, Detail: fmt.Sprintf("CUDA error: %s", oneLine(m)),
				Hint: "the container saw no usable GPU: check the driver on the node ('kubectl gpu prep NODE') and the device plugin / operator validator"}
		}
		detail := "the container failed"
		for _, cs := range p.Status.ContainerStatuses {
			if t := cs.State.Terminated; t != nil {
				detail = fmt.Sprintf("the container exited with code %d (%s)", t.ExitCode, firstNonEmpty(t.Reason, "Error"))
				if t.Message != "" {
					detail += ": " + oneLine(t.Message)
				}
			}
		}
		return Verdict{Done: true, Result: Failed, Reason: ReasonContainerError, Detail: detail + lastLines(log), Hint: "read the log with --keep and 'kubectl logs'"}
	}
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodScheduled && c.Status == corev1.ConditionFalse && c.Reason == corev1.PodReasonUnschedulable {
			return unschedulable(c.Message)
		}
	}
	return Verdict{Result: Running}
}

func runtimeHandler(msg string) Verdict {
	return Verdict{Done: true, Result: Failed, Reason: ReasonRuntimeHandler,
		Detail: "containerd has no runtime for the RuntimeClass handler: " + oneLine(msg),
		Hint:   "configure the nvidia runtime in containerd ('kubectl gpu prep NODE --apply' or the GPU Operator's toolkit), or --runtime-class none in CDI mode"}
}

func unschedulable(msg string) Verdict {
	v := Verdict{Done: true, Result: Failed, Reason: ReasonUnschedulable, Detail: "unschedulable: " + oneLine(msg)}
	lower := strings.ToLower(msg)
	switch {
	case strings.Contains(lower, "deviceclass") || strings.Contains(lower, "device class"):
		v.Reason = ReasonNoDeviceClass
		v.Hint = "the claim's DeviceClass does not exist: install NVIDIA's DRA driver ('kubectl gpu operator install --dra'), or --claim device-plugin"
	case strings.Contains(lower, "cannot allocate all claims") || strings.Contains(lower, "insufficient") && strings.Contains(lower, "device"):
		v.Reason = ReasonNoDevice
		v.Hint = "every GPU DRA publishes on the node is allocated to other claims: wait for them to end, or ask for fewer with --gpus"
	case strings.Contains(lower, "resourceclaim") && strings.Contains(lower, "not found"):
		v.Reason = ReasonClaimPending
		v.Hint = "the pod's claim was not made from its template yet: check kube-controller-manager's resource-claim controller"
	case strings.Contains(msg, "Insufficient nvidia.com/") || strings.Contains(msg, "Insufficient"):
		v.Hint = "not enough free GPUs on the node: wait for running GPU pods to end, or ask for fewer with --gpus"
	case strings.Contains(msg, "untolerated taint"):
		v.Hint = "the node has a taint the verify pod does not tolerate: --tolerate-all, or remove the taint"
	case strings.Contains(msg, "not ready") || strings.Contains(msg, "unreachable"):
		v.Hint = "the node is not ready: check 'kubectl describe node'"
	default:
		v.Hint = "see 'kubectl describe pod' with --keep"
	}
	return v
}

// lastLines formats the last lines of a log for a one-line detail.
func lastLines(log string) string {
	log = strings.TrimSpace(log)
	if log == "" {
		return ""
	}
	lines := strings.Split(log, "\n")
	if len(lines) > 3 {
		lines = lines[len(lines)-3:]
	}
	return "; log: " + strings.Join(lines, " | ")
}

// oneLine is a pod's message quoted in a table cell.
func oneLine(s string) string { return cliexit.OneLineCut(s, 300) }

func firstNonEmpty(s ...string) string {
	for _, v := range s {
		if v != "" {
			return v
		}
	}
	return ""
}
