package helmrelease

import (
	"errors"
	"testing"

	"github.com/kubectl-gpu/kubectl-gpu/common/cliexit"
)

// TestHelmErrorForbidden: Helm's wrapping of an RBAC refusal becomes the same one line the
// other commands print, with the refused verb and resource, exit 2.
func TestHelmErrorForbidden(t *testing.T) {
	err := helmError("read the history of release gpu-operator", errors.New(`query: failed to query with labels: secrets is forbidden: User "bob" cannot list resource "secrets" in API group "" in the namespace "gpu-operator"`))
	want := `cannot read the history of release gpu-operator: forbidden by RBAC (secrets is forbidden: User "bob" cannot list resource "secrets" in API group "" in the namespace "gpu-operator"): ask a cluster admin for that permission`
	if err.Error() != want || cliexit.Code(err, false) != cliexit.Usage {
		t.Fatalf("%v (code %d)", err, cliexit.Code(err, false))
	}
}
