// Package e2e runs the built kubectl-gpu binary through kubectl's plugin lookup against a
// real control plane (etcd, kube-apiserver, kube-controller-manager, kube-scheduler) whose
// nodes are simulated by kwok: node objects, their readiness and pod phases are made up
// by kwok; the API, admission, RBAC, scheduling and controllers are real.
package e2e

import (
	"os"
	"testing"

	"github.com/kubectl-gpu/kubectl-gpu/hack/testenv/localcluster"
	"github.com/kubectl-gpu/kubectl-gpu/test/harness"
)

var env *harness.Env

func TestMain(m *testing.M) {
	os.Exit(harness.Main(m, &env, localcluster.DefaultNodes...))
}
