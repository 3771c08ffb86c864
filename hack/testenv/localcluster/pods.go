package localcluster

import (
	"context"
	"fmt"
	"time"

	"github.com/kubectl-gpu/kubectl-gpu/hack/testenv/nodefixtures"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// GPUPod is a pod pinned to node that requests gpus nvidia.com/gpu (see nodefixtures).
var GPUPod = nodefixtures.GPUPod

// RunGPUPod creates GPUPod and waits until kwok reports it Running.
func (c *Cluster) RunGPUPod(ctx context.Context, ns, name, node string, gpus int64) (*corev1.Pod, error) {
	p, err := c.Client.CoreV1().Pods(ns).Create(ctx, GPUPod(ns, name, node, gpus), metav1.CreateOptions{})
	if err != nil {
		return nil, err
	}
	err = c.waitReady(ctx, "pod "+ns+"/"+name, 60*time.Second, func(ctx context.Context) error {
		p, err = c.Client.CoreV1().Pods(ns).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		if p.Status.Phase != corev1.PodRunning {
			return fmt.Errorf("phase %s", p.Status.Phase)
		}
		return nil
	})
	return p, err
}
