package inventory

import (
	"context"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"
)

// TestListAndChooseNamed: a few nodes by name are read one GET each (no list of the whole
// cluster), with the same answer and the same refusal of a missing name as the list gives;
// a selector still lists.
func TestListAndChooseNamed(t *testing.T) {
	var objs []corev1.Node
	for _, n := range []string{"a", "b", "c"} {
		objs = append(objs, corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: n, Labels: map[string]string{"pool": "gpu"}}})
	}
	cs := fake.NewSimpleClientset(&objs[0], &objs[1], &objs[2])
	got, err := ListAndChoose(context.Background(), cs, Options{Names: []string{"c", "a", "c"}})
	want, _ := Choose(objs, Options{Names: []string{"c", "a", "c"}})
	if err != nil || len(got) != 2 || got[0].Name != want[0].Name || got[1].Name != want[1].Name {
		t.Fatalf("named: %v %v; the list's answer %v", got, err, want)
	}
	if len(cs.Actions()) != 2 {
		t.Errorf("%d requests for 2 named nodes", len(cs.Actions()))
	}
	for _, a := range cs.Actions() {
		if a.GetVerb() != "get" {
			t.Errorf("named nodes read with %s", a.GetVerb())
		}
	}
	_, err = ListAndChoose(context.Background(), cs, Options{Names: []string{"a", "zz"}})
	_, lerr := Choose(objs, Options{Names: []string{"a", "zz"}})
	if err == nil || lerr == nil || err.Error() != lerr.Error() || !strings.Contains(err.Error(), "zz") {
		t.Errorf("a missing name: %v; the list's refusal %v", err, lerr)
	}
	cs.ClearActions()
	if got, err := ListAndChoose(context.Background(), cs, Options{Selector: "pool=gpu"}); err != nil || len(got) != 3 || cs.Actions()[0].GetVerb() != "list" {
		t.Errorf("selector: %v %v %v", got, err, cs.Actions())
	}
}
