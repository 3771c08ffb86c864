package e2e

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"
	"sigs.k8s.io/yaml"
)

var crdGVR = schema.GroupVersionResource{Group: "apiextensions.k8s.io", Version: "v1", Resource: "customresourcedefinitions"}

// installCRD creates a published CRD (testdata/crds) on the local API server and waits until
// it is served; it is removed at the end of the test.
func installCRD(t *testing.T, ctx context.Context, dyn dynamic.Interface, file string) {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", "crds", file))
	if err != nil {
		t.Fatal(err)
	}
	var obj map[string]any
	if err := yaml.Unmarshal(b, &obj); err != nil {
		t.Fatal(err)
	}
	crd := &unstructured.Unstructured{Object: obj}
	if _, err := dyn.Resource(crdGVR).Create(ctx, crd, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = dyn.Resource(crdGVR).Delete(context.Background(), crd.GetName(), metav1.DeleteOptions{}) })
	deadline := time.Now().Add(30 * time.Second)
	for {
		got, err := dyn.Resource(crdGVR).Get(ctx, crd.GetName(), metav1.GetOptions{})
		if err == nil {
			conds, _, _ := unstructured.NestedSlice(got.Object, "status", "conditions")
			for _, c := range conds {
				if m, ok := c.(map[string]any); ok && m["type"] == "Established" && m["status"] == "True" {
					return
				}
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("CRD %s not established", crd.GetName())
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// validate asks the API server to create doc (a dry run) with strict field validation: the
// published CRD's schema decides (types, required fields, no unknown field).
func validate(t *testing.T, ctx context.Context, dyn dynamic.Interface, doc []byte, resource string) error {
	t.Helper()
	var obj map[string]any
	if err := yaml.Unmarshal(doc, &obj); err != nil {
		t.Fatal(err)
	}
	u := &unstructured.Unstructured{Object: obj}
	gv, err := schema.ParseGroupVersion(u.GetAPIVersion())
	if err != nil {
		t.Fatal(err)
	}
	ns := u.GetNamespace()
	if ns != "" {
		_, _ = env.Cluster.Client.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{})
	}
	_, err = dyn.Resource(gv.WithResource(resource)).Namespace(ns).Create(ctx, u, metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}, FieldValidation: "Strict"})
	return err
}

// TestGitOpsAgainstTheirCRDs: what `operator values -o application` and `-o helmrelease` print
// is accepted by the local API server under Argo CD's and Flux's own published CRDs, with
// strict field validation; a document with a field those CRDs do not have is refused (the
// check can fail).
func TestGitOpsAgainstTheirCRDs(t *testing.T) {
	repo := chartRepo(t, chartPath(t))
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	dyn, err := dynamic.NewForConfig(env.Cluster.Config)
	if err != nil {
		t.Fatal(err)
	}
	installCRD(t, ctx, dyn, "argoproj.io_applications.yaml")
	installCRD(t, ctx, dyn, "helm.toolkit.fluxcd.io_helmreleases.yaml")

	r := env.Gpu(ctx, "operator", "values", "--repo", repo, "-o", "application")
	if r.Code != 0 {
		t.Fatalf("values -o application: exit %d\n%s", r.Code, r.Stderr)
	}
	if err := validate(t, ctx, dyn, []byte(r.Stdout), "applications"); err != nil {
		t.Errorf("Argo CD's Application CRD refuses the output: %v\n%s", err, r.Stdout)
	}
	bad := strings.Replace(r.Stdout, "releaseName:", "releaseNames:", 1)
	if err := validate(t, ctx, dyn, []byte(bad), "applications"); err == nil || !strings.Contains(err.Error(), "releaseNames") {
		t.Errorf("an unknown field was not refused: %v", err)
	}

	r = env.Gpu(ctx, "operator", "values", "--repo", repo, "-o", "helmrelease")
	if r.Code != 0 {
		t.Fatalf("values -o helmrelease: exit %d\n%s", r.Code, r.Stderr)
	}
	docs := strings.Split(r.Stdout, "\n---\n")
	var hr string
	for _, d := range docs {
		if strings.Contains(d, "kind: HelmRelease") {
			hr = d
		}
	}
	if hr == "" {
		t.Fatalf("no HelmRelease in:\n%s", r.Stdout)
	}
	if err := validate(t, ctx, dyn, []byte(hr), "helmreleases"); err != nil {
		t.Errorf("Flux's HelmRelease CRD refuses the output: %v\n%s", err, hr)
	}
}
