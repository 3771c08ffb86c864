// Command image assembles the node-agent image without a Docker engine: the agent binary
// (built for this machine, cgo for go-nvml), nsenter, and the shared libraries both load
// (found with ldd), as one layer on an empty base, with the image config the Dockerfile
// gives. It writes a docker-loadable tarball (and an OCI layout with -oci).
//
//	go run ./hack/image -agent bin/gpu-node-agent -tag ghcr.io/kubectl-gpu/gpu-node-agent:v0.1.0 -out dist/gpu-node-agent.tar
//
// Only the machine's own architecture: the agent needs a C toolchain for its target.
package main

import (
	"archive/tar"
	"bytes"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"sort"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
)

func main() {
	agent := flag.String("agent", "bin/gpu-node-agent", "agent binary")
	tag := flag.String("tag", "ghcr.io/kubectl-gpu/gpu-node-agent:v0.0.0-dev", "image reference")
	out := flag.String("out", "dist/gpu-node-agent.tar", "docker-loadable tarball to write")
	oci := flag.String("oci", "", "also write an OCI layout to this directory")
	flag.Parse()
	if err := Build(*agent, *tag, *out, *oci); err != nil {
		fmt.Fprintln(os.Stderr, "image:", err)
		os.Exit(1)
	}
}

var lddLine = regexp.MustCompile(`(?m)(?:=> )?(/[^ ]+) \(0x`)

// libs lists the shared libraries a binary loads (ldd), and the loader.
func libs(bin string) ([]string, error) {
	out, err := exec.Command("ldd", bin).CombinedOutput()
	if err != nil {
		if bytes.Contains(out, []byte("not a dynamic executable")) {
			return nil, nil
		}
		return nil, fmt.Errorf("ldd %s: %v: %s", bin, err, out)
	}
	var l []string
	for _, m := range lddLine.FindAllStringSubmatch(string(out), -1) {
		l = append(l, m[1])
	}
	return l, nil
}

// Build writes the image.
func Build(agent, tag, out, oci string) error {
	nsenter, err := exec.LookPath("nsenter")
	if err != nil {
		return fmt.Errorf("nsenter (util-linux) is needed in the image: %w", err)
	}
	files := map[string]string{"/usr/local/bin/gpu-node-agent": agent, "/usr/bin/nsenter": nsenter}
	for _, b := range []string{agent, nsenter} {
		l, err := libs(b)
		if err != nil {
			return err
		}
		for _, p := range l {
			files[p] = p
		}
	}
	layerTar, err := layerFrom(files)
	if err != nil {
		return err
	}
	layer, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(layerTar)), nil })
	if err != nil {
		return err
	}
	img, err := mutate.AppendLayers(empty.Image, layer)
	if err != nil {
		return err
	}
	cfg, err := img.ConfigFile()
	if err != nil {
		return err
	}
	cfg = cfg.DeepCopy()
	cfg.OS, cfg.Architecture = "linux", runtime.GOARCH
	cfg.Created = v1.Time{Time: time.Date(2000, 1, 1, 0, 0, 0, 0, time.UTC)}
	cfg.Config.Entrypoint = []string{"/usr/local/bin/gpu-node-agent"}
	cfg.Config.Cmd = []string{"check"}
	cfg.Config.User = "65532:65532"
	cfg.Config.Env = []string{"PATH=/usr/local/bin:/usr/bin:/bin"}
	if img, err = mutate.ConfigFile(img, cfg); err != nil {
		return err
	}
	ref, err := name.ParseReference(tag)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(out), 0o755); err != nil {
		return err
	}
	if err := tarball.WriteToFile(out, ref, img); err != nil {
		return err
	}
	if oci != "" {
		p, err := layout.Write(oci, empty.Index)
		if err != nil {
			return err
		}
		if err := p.AppendImage(img); err != nil {
			return err
		}
	}
	d, _ := img.Digest()
	fmt.Fprintf(os.Stderr, "image: %s %s (%d files) -> %s\n", tag, d, len(files), out)
	return nil
}

// layerFrom writes the files (image path → local path) as a tar layer, links resolved,
// with fixed timestamps and owners.
func layerFrom(files map[string]string) ([]byte, error) {
	var paths []string
	for p := range files {
		paths = append(paths, p)
	}
	sort.Strings(paths)
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	dirs := map[string]bool{}
	epoch := time.Date(2000, 1, 1, 0, 0, 0, 0, time.UTC)
	for _, p := range paths {
		for d := filepath.Dir(p); d != "/" && !dirs[d]; d = filepath.Dir(d) {
			dirs[d] = true
		}
	}
	var dl []string
	for d := range dirs {
		dl = append(dl, d)
	}
	sort.Strings(dl)
	for _, d := range dl {
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: d[1:] + "/", Mode: 0o755, ModTime: epoch}); err != nil {
			return nil, err
		}
	}
	for _, p := range paths {
		b, err := os.ReadFile(files[p]) // follows links
		if err != nil {
			return nil, err
		}
		if err := tw.WriteHeader(&tar.Header{Name: p[1:], Mode: 0o755, Size: int64(len(b)), ModTime: epoch}); err != nil {
			return nil, err
		}
		if _, err := tw.Write(b); err != nil {
			return nil, err
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}
