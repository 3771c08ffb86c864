// Package mirrortest is the tests' "public" side of a mirror: a registry on 127.0.0.1 that
// a values file moves the chart's repositories to (as a site's own source registry would
// be; nothing outside the machine is reachable), holding stand-in images.
package mirrortest

import (
	"io"
	"log"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"helm.sh/helm/v3/pkg/chart"
	"sigs.k8s.io/yaml"

	"github.com/kubectl-gpu/kubectl-gpu/common/mirror"
)

// Public is the public registry and the values file that points the chart at it.
type Public struct {
	Server *httptest.Server
	Target mirror.Target
	// ValuesFile moves every repository of the chart's values to the registry.
	ValuesFile string
	// AgentImage and VerifyImage are prep's and verify's images there.
	AgentImage, VerifyImage string
}

// NewPublic serves the registry (closed at the end of the test) and writes the values file
// into dir; verifyImage is where the verify image lives upstream.
func NewPublic(t testing.TB, ch *chart.Chart, dir, verifyImage string) *Public {
	t.Helper()
	p := &Public{Server: httptest.NewServer(registry.New(registry.Logger(log.New(io.Discard, "", 0))))}
	t.Cleanup(p.Server.Close)
	var err error
	if p.Target, err = mirror.ParseTarget(strings.TrimPrefix(p.Server.URL, "http://"), true); err != nil {
		t.Fatal(err)
	}
	vals, _, err := mirror.Values(ch, map[string]any{}, p.Target)
	if err != nil {
		t.Fatal(err)
	}
	b, err := yaml.Marshal(vals)
	if err != nil {
		t.Fatal(err)
	}
	p.ValuesFile = filepath.Join(dir, "public.yaml")
	if err := os.WriteFile(p.ValuesFile, b, 0o644); err != nil {
		t.Fatal(err)
	}
	p.AgentImage, _ = p.Target.Map("ghcr.io/kubectl-gpu/gpu-node-agent:v0.0.0-test")
	p.VerifyImage, _ = p.Target.Map(verifyImage)
	return p
}

// Seed writes a small random stand-in image under each reference (plain HTTP).
func Seed(t testing.TB, refs []string) {
	t.Helper()
	for _, r := range refs {
		img, err := random.Image(256, 1)
		if err != nil {
			t.Fatal(err)
		}
		ref, err := name.ParseReference(r, name.Insecure)
		if err != nil {
			t.Fatal(err)
		}
		if err := remote.Write(ref, img); err != nil {
			t.Fatal(err)
		}
	}
}
