package operator

import (
	"encoding/json"
	"reflect"
	"strings"
	"testing"

	"helm.sh/helm/v3/pkg/cli/values"
	"helm.sh/helm/v3/pkg/getter"
	corev1 "k8s.io/api/core/v1"

	"github.com/kubectl-gpu/kubectl-gpu/common/helmrelease"
	"github.com/kubectl-gpu/kubectl-gpu/common/inventory"
	rep "github.com/kubectl-gpu/kubectl-gpu/common/nodereport"
	"github.com/kubectl-gpu/kubectl-gpu/hack/testenv/nodefixtures"
)

// FuzzDerive: nodes with any labels and prep annotations: Derive never panics, is a pure
// function (the same nodes give the same values), every value has a key and a reason, and
// the result serialises (it is printed with -o json).
func FuzzDerive(f *testing.F) {
	f.Add("a100", "550.127.08", "1.17.4", "true", "", 3)
	f.Add("rke2", "570.86.15", "", "false", "pre-installed", 2)
	f.Add("k3s", "", "1.17.4", "true", "", 1)
	f.Add("mig", "", "", "", "false", 4)
	f.Add("cpu", "x", "y", "z", "w", 0)
	f.Add("bare-gpu", "\x00", "..", "TRUE", "pre-installed", 7)
	f.Fuzz(func(t *testing.T, profile, driver, toolkit, runtime, deploy string, n int) {
		if _, ok := nodefixtures.Profiles[profile]; !ok {
			profile = "a100"
		}
		if n < 0 {
			n = -n
		}
		n %= 9
		var nodes []corev1.Node
		for i := 0; i < n; i++ {
			ann := map[string]string{}
			// Alternate which nodes carry which annotation: mixed clusters.
			if i%2 == 0 {
				ann[rep.AnnotationDriver] = driver
			}
			if i%3 != 1 {
				ann[rep.AnnotationToolkit], ann[rep.AnnotationNvidiaRuntime] = toolkit, runtime
			}
			nd := node(strings.Repeat("n", i+1), profile, ann)
			if deploy != "" {
				nd.Labels[inventory.LabelDeployDriver] = deploy
			}
			nodes = append(nodes, nd)
		}
		d1, d2 := Derive(nodes), Derive(nodes)
		if !reflect.DeepEqual(d1, d2) {
			t.Fatalf("Derive is not deterministic:\n%+v\n%+v", d1, d2)
		}
		for _, v := range d1.Values {
			if v.Key == "" || v.Reason == "" {
				t.Fatalf("value without key or reason: %+v", v)
			}
		}
		if _, err := json.Marshal(d1); err != nil {
			t.Fatal(err)
		}
	})
}

// FuzzSetValues: any --set string goes through Helm's own parser (as install does); what it
// accepts is merged over derived values and every value the user set wins, a null included
// (Helm then removes the chart's default there); nothing panics.
func FuzzSetValues(f *testing.F) {
	for _, s := range []string{
		"driver.enabled=true", "toolkit.env[0].name=CONTAINERD_SOCKET,toolkit.env[0].value=/run/x.sock",
		"driver=null", "a\\.b=c", "devicePlugin.config.name=x,devicePlugin.config.default=any",
		"mig.strategy=mixed", "operator.defaultRuntime=containerd", "x[3]=1", "=", "a=b=c", "{}",
	} {
		f.Add(s)
	}
	nodes := []corev1.Node{node("a", "a100", hostStack), node("r", "rke2", map[string]string{rep.AnnotationDriver: "570.86.15"})}
	f.Fuzz(func(t *testing.T, set string) {
		opts := values.Options{Values: []string{set}}
		user, err := opts.MergeValues(getter.Providers{})
		if err != nil {
			return // refused by Helm's parser: install stops with that error
		}
		d := Derive(nodes)
		merged := helmrelease.Merge(&d, user)
		userWins(t, "", user, merged)
		_ = helmrelease.StaleKeys(user, map[string]any{"driver": map[string]any{"enabled": true}}, ChartName, "v26.7.0")
	})
}

func userWins(t *testing.T, path string, user, merged map[string]any) {
	t.Helper()
	for k, v := range user {
		got, present := merged[k]
		switch uv := v.(type) {
		case nil:
			// The null reaches Helm, which then removes the chart's default there.
			if !present || got != nil {
				t.Fatalf("%s%s: the user's null was lost (merged has %#v, present %v)", path, k, got, present)
			}
		case map[string]any:
			gm, ok := got.(map[string]any)
			if !ok {
				t.Fatalf("%s%s: user table lost, merged has %#v", path, k, got)
			}
			userWins(t, path+k+".", uv, gm)
		default:
			if !reflect.DeepEqual(got, v) {
				t.Fatalf("%s%s: user value %#v, merged %#v", path, k, v, got)
			}
		}
	}
}
