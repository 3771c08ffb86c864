package nodepod

import (
	"context"
	"fmt"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/utils/ptr"

	"github.com/kubectl-gpu/kubectl-gpu/common/cliexit"
)

// What holds a pod on a node — anyone's: the device plugin's, a driver container's, the
// operator's validator. deviceplugin's status and doctor's software links read it here.

// PodHold is a pod's state and what holds it.
type PodHold struct {
	Ready bool
	// State is the pod's phase, or what holds it: a container's waiting reason
	// (ImagePullBackOff, CrashLoopBackOff…), Error, or Pending for the scheduler.
	State string
	// Message says why: the pull's error, the crash's log line (NVML, CDI), the scheduler's.
	Message string
	// ImagePull tells that the node cannot pull the pod's image (State is the kubelet's
	// reason for it).
	ImagePull bool
}

// Hold reads what holds a pod: the first container (init containers first) waiting for a
// reason other than starting, or ended with an error (its termination message, else its log,
// read for the line that says why), else the scheduler's refusal; else its phase.
func Hold(ctx context.Context, cs kubernetes.Interface, p *corev1.Pod) PodHold {
	h := PodHold{State: string(p.Status.Phase)}
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			h.Ready = c.Status == corev1.ConditionTrue
		}
		if c.Type == corev1.PodScheduled && c.Status == corev1.ConditionFalse {
			h.State, h.Message = "Pending", c.Message
		}
	}
	for _, c := range append(append([]corev1.ContainerStatus{}, p.Status.InitContainerStatuses...), p.Status.ContainerStatuses...) {
		switch {
		case c.State.Waiting != nil && c.State.Waiting.Reason != "" && c.State.Waiting.Reason != "PodInitializing" && c.State.Waiting.Reason != "ContainerCreating":
			h.State, h.Message = c.State.Waiting.Reason, cliexit.OneLine(c.State.Waiting.Message)
			h.ImagePull = ImagePullFailed(c.State.Waiting)
			if c.State.Waiting.Reason == "CrashLoopBackOff" || c.RestartCount > 0 {
				if l := crashLine(ctx, cs, p, c); l != "" {
					h.Message = l
				}
				h.Message = fmt.Sprintf("container %s restarted %d times: %s", c.Name, c.RestartCount, h.Message)
			}
		case c.State.Terminated != nil && c.State.Terminated.ExitCode != 0:
			h.State, h.Message = "Error", fmt.Sprintf("container %s exited %d", c.Name, c.State.Terminated.ExitCode)
			if l := crashLine(ctx, cs, p, c); l != "" {
				h.Message += ": " + l
			}
		default:
			continue
		}
		if !h.ImagePull && h.Message == "" {
			h.Message = "container " + c.Name
		}
		return h
	}
	return h
}

// logSignals are the lines of the plugin's (and GFD's, DCGM's) log that say why it stops.
var logSignals = []string{"NVML", "nvml", "CDI", "cdi", "driver", "error", "Error", "failed", "Failed"}

// crashLine is the line of the container's previous (else current) log that says why it
// stopped: the last that names NVML, CDI or the driver, else the last error line.
func crashLine(ctx context.Context, cs kubernetes.Interface, p *corev1.Pod, c corev1.ContainerStatus) string {
	// The kubelet's termination message of the last run (the container's termination log,
	// or its log's tail with FallbackToLogsOnError) costs no request.
	for _, st := range []corev1.ContainerState{c.State, c.LastTerminationState} {
		if st.Terminated != nil {
			if l := WhyLine(st.Terminated.Message); l != "" {
				return l
			}
		}
	}
	lctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	var text []byte
	for _, prev := range []bool{true, false} {
		b, err := ReadLog(lctx, cs, p.Namespace, p.Name, &corev1.PodLogOptions{Container: c.Name, Previous: prev, TailLines: ptr.To[int64](50)})
		if err == nil && len(strings.TrimSpace(string(b))) > 0 {
			text = b
			break
		}
	}
	return WhyLine(string(text))
}

// WhyLine picks the line of a GPU component's log (the device plugin's, GFD's, DCGM's, a driver container's) that says why it stopped:
// the last that names NVML, CDI or the driver, else the last error line ("" none).
func WhyLine(log string) string {
	lines := strings.Split(strings.TrimSpace(log), "\n")
	for _, group := range [][]string{logSignals[:5], logSignals[5:]} {
		for i := len(lines) - 1; i >= 0; i-- {
			for _, sig := range group {
				if strings.Contains(lines[i], sig) {
					return Fit(strings.TrimSpace(lines[i]), 300)
				}
			}
		}
	}
	return ""
}
