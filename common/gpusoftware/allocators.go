// Package gpusoftware is what serves GPUs in a cluster as more than one command reads it: the
// GPU Operator's objects (ClusterPolicy, GPUCluster) and its conventional release, what
// already hands out GPUs (GPUAllocators), and NVIDIA's device plugin — its image and its config
// file's sharing profiles — which the operator's ClusterPolicy and the device plugin's own chart
// both point at. The operator and the device plugin stacks are peers that read it; neither
// imports the other.
package gpusoftware

import (
	"context"
	"path"
	"sort"
	"strings"

	appsv1 "k8s.io/api/apps/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"

	"github.com/kubectl-gpu/kubectl-gpu/common/cluster"
)

// The GPU Operator's conventional release: the name and namespace its docs install it as.
const (
	OperatorRelease   = "gpu-operator"
	OperatorNamespace = "gpu-operator"
)

// ClusterPolicyGVR is the GPU Operator's ClusterPolicy.
var ClusterPolicyGVR = schema.GroupVersionResource{Group: "nvidia.com", Version: "v1", Resource: "clusterpolicies"}

// ClusterPolicyName is the ClusterPolicy the chart creates.
const ClusterPolicyName = "cluster-policy"

// GPUClusterGVR is the GPU Operator's DRA stack (chart value gpuCluster.deployCR), a
// singleton named GPUClusterName that cannot coexist with a ClusterPolicy.
var GPUClusterGVR = schema.GroupVersionResource{Group: "nvidia.com", Version: "v1alpha1", Resource: "gpuclusters"}

// GPUClusterName is the GPUCluster the chart creates.
const GPUClusterName = "gpu-cluster"

// IsNoResource tells whether err is the API server not serving a resource (its CRD is not
// installed).
func IsNoResource(err error) bool {
	return strings.Contains(err.Error(), "the server could not find the requested resource")
}

// Helm's own annotations on every object of a release.
const (
	AnnotationHelmRelease   = "meta.helm.sh/release-name"
	AnnotationHelmNamespace = "meta.helm.sh/release-namespace"
)

// DevicePluginImage is the repository (last path element) of NVIDIA's device plugin image,
// which the operator's device plugin, the standalone chart and the static manifest all run.
const DevicePluginImage = "k8s-device-plugin"

// GPUAllocator is something that hands out the GPUs of nodes to pods: a ClusterPolicy whose
// device plugin is on, a GPUCluster (the DRA driver), or a DaemonSet running NVIDIA's device
// plugin (a Helm release of the chart, a static manifest). Two on one node advertise the
// same GPUs twice, a known breakage.
type GPUAllocator struct {
	Kind      string `json:"kind"`
	Namespace string `json:"namespace,omitempty"`
	Name      string `json:"name"`
	// Release is the Helm release the object belongs to (Helm's annotations), if any, and
	// the namespace of that release.
	Release          string `json:"release,omitempty"`
	ReleaseNamespace string `json:"releaseNamespace,omitempty"`
}

func (a GPUAllocator) String() string {
	s := a.Kind + " " + a.Name
	if a.Namespace != "" {
		s = a.Kind + " " + a.Namespace + "/" + a.Name
	}
	if a.Release != "" {
		s += " (Helm release " + a.Release + ")"
	}
	return s
}

// GPUAllocators lists what already allocates GPUs in the cluster. DaemonSets of the Helm
// release own (namespace/name; the caller's own, on an upgrade) and those a ClusterPolicy
// or GPUCluster owns (reported as that object) are left out; a missing CRD is no allocator.
func GPUAllocators(ctx context.Context, cs kubernetes.Interface, dyn dynamic.Interface, ownNamespace, ownRelease string) ([]GPUAllocator, error) {
	var out []GPUAllocator
	if dyn != nil {
		cp, err := dyn.Resource(ClusterPolicyGVR).Get(ctx, ClusterPolicyName, metav1.GetOptions{})
		switch {
		case err == nil:
			if on, found, _ := unstructured.NestedBool(cp.Object, "spec", "devicePlugin", "enabled"); on || !found {
				out = append(out, GPUAllocator{Kind: "ClusterPolicy", Name: ClusterPolicyName, Release: cp.GetAnnotations()[AnnotationHelmRelease], ReleaseNamespace: cp.GetAnnotations()[AnnotationHelmNamespace]})
			}
		case !apierrors.IsNotFound(err) && !IsNoResource(err):
			return nil, cluster.APIError("get ClusterPolicy "+ClusterPolicyName, err)
		}
		gc, err := dyn.Resource(GPUClusterGVR).Get(ctx, GPUClusterName, metav1.GetOptions{})
		switch {
		case err == nil:
			out = append(out, GPUAllocator{Kind: "GPUCluster", Name: GPUClusterName, Release: gc.GetAnnotations()[AnnotationHelmRelease], ReleaseNamespace: gc.GetAnnotations()[AnnotationHelmNamespace]})
		case !apierrors.IsNotFound(err) && !IsNoResource(err):
			return nil, cluster.APIError("get GPUCluster "+GPUClusterName, err)
		}
	}
	dss, err := cs.AppsV1().DaemonSets(metav1.NamespaceAll).List(ctx, metav1.ListOptions{})
	if err != nil {
		return nil, cluster.APIError("list DaemonSets", err)
	}
	for i := range dss.Items {
		ds := &dss.Items[i]
		rel := ds.Annotations[AnnotationHelmRelease]
		if ownRelease != "" && rel == ownRelease && ds.Namespace == ownNamespace || ownedByStack(ds) || !RunsDevicePlugin(ds) {
			continue
		}
		relNS := ds.Annotations[AnnotationHelmNamespace]
		if relNS == "" && rel != "" {
			relNS = ds.Namespace
		}
		out = append(out, GPUAllocator{Kind: "DaemonSet", Namespace: ds.Namespace, Name: ds.Name, Release: rel, ReleaseNamespace: relNS})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].String() < out[j].String() })
	return out, nil
}

// RemoveCommand is the command that removes the allocator's release ("" when it is not a
// Helm release): the GPU Operator's by 'kubectl gpu operator uninstall' with its release's
// name and namespace, any other by helm.
func (a GPUAllocator) RemoveCommand() string {
	if a.Release == "" {
		return ""
	}
	ns := a.ReleaseNamespace
	if a.Kind == "ClusterPolicy" || a.Kind == "GPUCluster" {
		cmd := "kubectl gpu operator uninstall"
		if a.Release != OperatorRelease {
			cmd += " --release-name " + a.Release
		}
		if ns != "" && ns != OperatorNamespace {
			cmd += " -n " + ns
		}
		return cmd
	}
	if ns == "" {
		return "helm uninstall " + a.Release
	}
	return "helm uninstall " + a.Release + " -n " + ns
}

func ownedByStack(ds *appsv1.DaemonSet) bool {
	for _, o := range ds.OwnerReferences {
		if o.Kind == "ClusterPolicy" || o.Kind == "GPUCluster" || o.Kind == "NVIDIADriver" {
			return true
		}
	}
	return false
}

// RunsDevicePlugin tells whether a DaemonSet runs NVIDIA's device plugin: a container of the
// k8s-device-plugin image whose command is the plugin (the image's default), not GPU feature
// discovery or the MPS control daemon of the same image.
func RunsDevicePlugin(ds *appsv1.DaemonSet) bool {
	for _, c := range ds.Spec.Template.Spec.Containers {
		repo := c.Image
		if i := strings.LastIndex(repo, "@"); i >= 0 {
			repo = repo[:i]
		}
		if i := strings.LastIndex(repo, ":"); i > strings.LastIndex(repo, "/") {
			repo = repo[:i]
		}
		if path.Base(repo) != DevicePluginImage {
			continue
		}
		if len(c.Command) == 0 || path.Base(c.Command[0]) == "nvidia-device-plugin" {
			return true
		}
	}
	return false
}

// Describe joins allocators for a message.
func Describe(as []GPUAllocator) string {
	s := make([]string, len(as))
	for i, a := range as {
		s[i] = a.String()
	}
	return strings.Join(s, ", ")
}

// Component is one operand DaemonSet.
type Component struct {
	Name    string `json:"name"`
	Desired int32  `json:"desired"`
	Ready   int32  `json:"ready"`
	Updated int32  `json:"updated"`
}

// ComponentOf is a DaemonSet's rollout.
func ComponentOf(ds *appsv1.DaemonSet) Component {
	return Component{Name: ds.Name, Desired: ds.Status.DesiredNumberScheduled, Ready: ds.Status.NumberReady, Updated: ds.Status.UpdatedNumberScheduled}
}
