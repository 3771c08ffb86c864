package root

import (
	"strings"
	"testing"
)

func TestHelmPluginArgs(t *testing.T) {
	env := func(m map[string]string) func(string) string { return func(k string) string { return m[k] } }
	helm := map[string]string{"HELM_PLUGIN_NAME": "gpu", "HELM_NAMESPACE": "gpu-operator", "HELM_KUBECONTEXT": "prod"}
	tests := []struct {
		env  map[string]string
		args string
		want string
	}{
		{nil, "install --wait", "install --wait"},
		{helm, "install --wait", "operator install --wait --namespace gpu-operator --context prod"},
		{helm, "status -n other", "operator status -n other --context prod"},
		{helm, "nodes --context=x", "nodes --context=x --namespace gpu-operator"},
		{map[string]string{"HELM_PLUGIN_NAME": "gpu"}, "version", "version"},
	}
	for _, tt := range tests {
		got := strings.Join(HelmPluginArgs(strings.Fields(tt.args), env(tt.env)), " ")
		if got != tt.want {
			t.Errorf("%q with %v: %q, want %q", tt.args, tt.env, got, tt.want)
		}
	}
}
