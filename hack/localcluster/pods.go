package localcluster

import (
	"context"
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// GPUPod is a pod pinned to node that requests gpus nvidia.com/gpu, as a training job would.
func GPUPod(ns, name, node string, gpus int64) *corev1.Pod {
	q := *resource.NewQuantity(gpus, resource.DecimalSI)
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns, Labels: map[string]string{"app": "gpu-workload"}},
		Spec: corev1.PodSpec{
			NodeName:    node,
			Tolerations: []corev1.Toleration{{Operator: corev1.TolerationOpExists}},
			Containers: []corev1.Container{{
				Name:  "train",
				Image: "registry.invalid/train:1",
				Resources: corev1.ResourceRequirements{
					Limits: corev1.ResourceList{"nvidia.com/gpu": q},
				},
			}},
		},
	}
}

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
