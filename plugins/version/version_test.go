package version

import (
	"context"
	"errors"
	"runtime"
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/version"
	"k8s.io/cli-runtime/pkg/genericiooptions"
	fakediscovery "k8s.io/client-go/discovery/fake"

	"github.com/kubectl-gpu/kubectl-gpu/common/cliexit"
	"github.com/kubectl-gpu/kubectl-gpu/common/cluster/clustertest"
	"github.com/kubectl-gpu/kubectl-gpu/common/golden"
)

func run(t *testing.T, g *clustertest.Getter, args ...string) (string, error) {
	t.Helper()
	streams, _, out, errOut := genericiooptions.NewTestIOStreams()
	cmd := NewCmdVersion(g, streams)
	cmd.SetArgs(append([]string{}, args...))
	cmd.SetOut(out)
	cmd.SetErr(errOut)
	err := cmd.ExecuteContext(context.Background())
	// The toolchain and platform are the build machine's.
	s := strings.ReplaceAll(out.String(), runtime.Version(), "GOVERSION")
	return strings.ReplaceAll(s, runtime.GOOS+"/"+runtime.GOARCH, "PLATFORM"), err
}

func TestVersionGolden(t *testing.T) {
	g := clustertest.New()
	g.Client.Discovery().(*fakediscovery.FakeDiscovery).FakedServerVersion = &version.Info{GitVersion: "v1.36.3", Platform: "linux/amd64"}
	down := clustertest.New()
	down.Unreachable = errors.New("dial tcp 127.0.0.1:1: connect: connection refused")
	for _, tc := range []struct {
		name, golden string
		g            *clustertest.Getter
		args         []string
		code         int
	}{
		{"table", "version.table.golden", g, nil, 0},
		{"json", "version.json.golden", g, []string{"-o", "json"}, 0},
		{"client only", "version.client.golden", down, []string{"--client"}, 0},
		{"server unreachable is reported", "version.unreachable.golden", down, nil, 0},
		{"server unreachable required", "version.required.golden", down, []string{"--require-server"}, cliexit.Usage},
		{"bad flags", "version.required.golden", g, []string{"--client", "--require-server"}, cliexit.Usage},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out, err := run(t, tc.g, tc.args...)
			if cliexit.Code(err, false) != tc.code {
				t.Fatalf("exit %d (%v), want %d", cliexit.Code(err, false), err, tc.code)
			}
			golden.Assert(t, tc.golden, []byte(out))
		})
	}
}
