package helmrelease

import (
	"fmt"
	"io"
	"strings"

	"sigs.k8s.io/yaml"
)

// GitOps forms of an install: what `operator install` would do, as objects a GitOps
// controller applies. The chart, version, release name, namespace and values are the
// install's; the namespace carries the privileged Pod Security label install sets.

// GitOpsSource is where the chart comes from.
type GitOpsSource struct {
	Repo    string
	Chart   string
	Version string
	// RepoName names Flux's HelmRepository ("nvidia" when empty).
	RepoName string
}

// FluxObjects are the Namespace, Flux's HelmRepository (source.toolkit.fluxcd.io/v1) and
// HelmRelease (helm.toolkit.fluxcd.io/v2) of the install.
func FluxObjects(src GitOpsSource, releaseName, namespace string, values map[string]any) []map[string]any {
	repoName := src.RepoName
	if repoName == "" {
		repoName = "nvidia"
	}
	repo := map[string]any{
		"apiVersion": "source.toolkit.fluxcd.io/v1", "kind": "HelmRepository",
		"metadata": map[string]any{"name": repoName, "namespace": namespace},
		"spec":     map[string]any{"interval": "1h", "url": src.Repo},
	}
	if strings.HasPrefix(src.Repo, "oci://") {
		repo["spec"].(map[string]any)["type"] = "oci"
	}
	rel := map[string]any{
		"apiVersion": "helm.toolkit.fluxcd.io/v2", "kind": "HelmRelease",
		"metadata": map[string]any{"name": releaseName, "namespace": namespace},
		"spec": map[string]any{
			"interval":    "10m",
			"releaseName": releaseName,
			"chart": map[string]any{"spec": map[string]any{
				"chart": src.Chart, "version": src.Version,
				"sourceRef": map[string]any{"kind": "HelmRepository", "name": repoName},
			}},
			"install": map[string]any{"crds": "CreateReplace", "remediation": map[string]any{"retries": 3}},
			"upgrade": map[string]any{"crds": "CreateReplace", "remediation": map[string]any{"retries": 3}},
			"values":  nonNil(values),
		},
	}
	return []map[string]any{namespaceObject(namespace), repo, rel}
}

// ArgoApplication is Argo CD's Application (argoproj.io/v1alpha1) of the install, in
// namespace argoNamespace (where Argo CD runs).
func ArgoApplication(src GitOpsSource, releaseName, namespace, argoNamespace string, values map[string]any) map[string]any {
	return map[string]any{
		"apiVersion": "argoproj.io/v1alpha1", "kind": "Application",
		"metadata": map[string]any{"name": releaseName, "namespace": argoNamespace},
		"spec": map[string]any{
			"project": "default",
			"source": map[string]any{
				"repoURL": strings.TrimPrefix(src.Repo, "oci://"), "chart": src.Chart, "targetRevision": src.Version,
				"helm": map[string]any{"releaseName": releaseName, "valuesObject": nonNil(values)},
			},
			"destination": map[string]any{"server": "https://kubernetes.default.svc", "namespace": namespace},
			"syncPolicy": map[string]any{
				"syncOptions":              []any{"CreateNamespace=true", "ServerSideApply=true"},
				"managedNamespaceMetadata": map[string]any{"labels": psaLabels()},
			},
		},
	}
}

func namespaceObject(ns string) map[string]any {
	return map[string]any{"apiVersion": "v1", "kind": "Namespace", "metadata": map[string]any{"name": ns, "labels": psaLabels()}}
}

func psaLabels() map[string]any {
	return map[string]any{"pod-security.kubernetes.io/enforce": "privileged", "pod-security.kubernetes.io/warn": "privileged", "pod-security.kubernetes.io/audit": "privileged"}
}

func nonNil(m map[string]any) map[string]any {
	if m == nil {
		return map[string]any{}
	}
	return m
}

// WriteYAML writes objects as a multi-document YAML stream.
func WriteYAML(w io.Writer, objs ...map[string]any) error {
	for i, o := range objs {
		b, err := yaml.Marshal(o)
		if err != nil {
			return err
		}
		if i > 0 {
			fmt.Fprintln(w, "---")
		}
		if _, err := w.Write(b); err != nil {
			return err
		}
	}
	return nil
}
