package operator

import (
	"context"
	"errors"
	"fmt"
	"path"
	"sort"
	"strings"

	appsv1 "k8s.io/api/apps/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"

	"github.com/kubectl-gpu/kubectl-gpu/common/cliexit"
	"github.com/kubectl-gpu/kubectl-gpu/common/cluster"
)

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
		case !apierrors.IsNotFound(err) && !isNoResource(err):
			return nil, cluster.APIError("get ClusterPolicy "+ClusterPolicyName, err)
		}
		gc, err := dyn.Resource(GPUClusterGVR).Get(ctx, GPUClusterName, metav1.GetOptions{})
		switch {
		case err == nil:
			out = append(out, GPUAllocator{Kind: "GPUCluster", Name: GPUClusterName, Release: gc.GetAnnotations()[AnnotationHelmRelease], ReleaseNamespace: gc.GetAnnotations()[AnnotationHelmNamespace]})
		case !apierrors.IsNotFound(err) && !isNoResource(err):
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
		if a.Release != DefaultReleaseName {
			cmd += " --release-name " + a.Release
		}
		if ns != "" && ns != DefaultNamespace {
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

// describeAllocators joins allocators for a message.
func describeAllocators(as []GPUAllocator) string {
	s := make([]string, len(as))
	for i, a := range as {
		s[i] = a.String()
	}
	return strings.Join(s, ", ")
}

// CheckNoOtherDevicePlugin refuses (exit 2) an operator install that would run its device
// plugin where another one (the standalone chart, a static manifest) already runs. Install
// asks it first; kubectl gpu up asks it before any node changes.
func (c *Client) CheckNoOtherDevicePlugin(ctx context.Context, values map[string]any, releaseName string) error {
	if dp, ok := values["devicePlugin"].(map[string]any); ok && dp["enabled"] == false {
		return nil
	}
	as, err := GPUAllocators(ctx, c.CS, nil, c.Namespace, releaseName)
	if apierrors.IsForbidden(errors.Unwrap(err)) || err != nil && strings.Contains(err.Error(), "forbidden by RBAC") {
		// An admin of the release namespace only: the install may go on, unchecked.
		fmt.Fprintf(c.Log, "warning: cannot look for another device plugin (listing DaemonSets in every namespace is forbidden): make sure none runs, or pass --set devicePlugin.enabled=false\n")
		return nil
	}
	if err != nil {
		return err
	}
	if len(as) == 0 {
		return nil
	}
	return cliexit.Usagef("%s already runs NVIDIA's device plugin, and two device plugins on one node advertise its GPUs twice: remove it ('kubectl gpu device-plugin uninstall' for the standalone chart) or pass --set devicePlugin.enabled=false", describeAllocators(as))
}
