// Package ociimage assembles container images without a Docker engine or registry
// (github.com/google/go-containerregistry): one tar layer of local files on an empty base,
// with fixed timestamps and owners so the same inputs give the same image. It serves
// `make image` (hack/image) and the images of the local cluster's real node.
package ociimage

import (
	"archive/tar"
	"bytes"
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

// Spec is an image: files (path in the image → local file, links followed) and its config.
type Spec struct {
	Files      map[string]string
	Entrypoint []string
	Cmd        []string
	Env        []string
	User       string
	Labels     map[string]string
	// Arch defaults to this machine's.
	Arch string
}

// epoch is every file's and the image's time: the same inputs give the same digest.
var epoch = time.Date(2000, 1, 1, 0, 0, 0, 0, time.UTC)

var lddLine = regexp.MustCompile(`(?m)(?:=> )?(/[^ ]+) \(0x`)

// Libs lists the shared libraries a binary loads (ldd) and the loader; none for a static one.
func Libs(bin string) ([]string, error) {
	out, err := exec.Command("ldd", bin).CombinedOutput()
	if err != nil {
		if bytes.Contains(out, []byte("not a dynamic executable")) {
			return nil, nil
		}
		return nil, fmt.Errorf("ldd %s: %v: %s", bin, err, out)
	}
	if bytes.Contains(out, []byte("statically linked")) {
		return nil, nil
	}
	var l []string
	for _, m := range lddLine.FindAllStringSubmatch(string(out), -1) {
		l = append(l, m[1])
	}
	return l, nil
}

// WithLibs adds the shared libraries of every file in files to it, at the same paths.
func WithLibs(files map[string]string) error {
	var bins []string
	for _, local := range files {
		bins = append(bins, local)
	}
	sort.Strings(bins)
	for _, b := range bins {
		l, err := Libs(b)
		if err != nil {
			return err
		}
		for _, p := range l {
			files[p] = p
		}
	}
	return nil
}

// AgentSpec is the node-agent image: the agent binary (cgo, for go-nvml), nsenter for apply
// mode, the shared libraries both load, and the config nodeimages/agent/Dockerfile gives.
func AgentSpec(agentBin string) (Spec, error) {
	nsenter, err := exec.LookPath("nsenter")
	if err != nil {
		return Spec{}, fmt.Errorf("nsenter (util-linux) is needed in the image: %w", err)
	}
	files := map[string]string{"/usr/local/bin/gpu-node-agent": agentBin, "/usr/bin/nsenter": nsenter}
	if err := WithLibs(files); err != nil {
		return Spec{}, err
	}
	return Spec{
		Files:      files,
		Entrypoint: []string{"/usr/local/bin/gpu-node-agent"},
		Cmd:        []string{"check"},
		User:       "65532:65532",
		Env:        []string{"PATH=/usr/local/bin:/usr/bin:/bin"},
	}, nil
}

// Build assembles the image.
func Build(s Spec) (v1.Image, error) {
	layerTar, err := Layer(s.Files)
	if err != nil {
		return nil, err
	}
	layer, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(layerTar)), nil })
	if err != nil {
		return nil, err
	}
	img, err := mutate.AppendLayers(empty.Image, layer)
	if err != nil {
		return nil, err
	}
	cfg, err := img.ConfigFile()
	if err != nil {
		return nil, err
	}
	cfg = cfg.DeepCopy()
	cfg.OS, cfg.Architecture = "linux", s.Arch
	if cfg.Architecture == "" {
		cfg.Architecture = runtime.GOARCH
	}
	cfg.Created = v1.Time{Time: epoch}
	cfg.Config.Entrypoint, cfg.Config.Cmd = s.Entrypoint, s.Cmd
	cfg.Config.User, cfg.Config.Env, cfg.Config.Labels = s.User, s.Env, s.Labels
	return mutate.ConfigFile(img, cfg)
}

// WriteTarball writes a docker-loadable tarball (`ctr images import`, `docker load`) that
// names the image ref.
func WriteTarball(path, ref string, img v1.Image) error {
	r, err := name.ParseReference(ref)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	return tarball.WriteToFile(path, r, img)
}

// WriteLayout adds the image to an OCI image layout directory.
func WriteLayout(dir string, img v1.Image) error {
	p, err := layout.Write(dir, empty.Index)
	if err != nil {
		return err
	}
	return p.AppendImage(img)
}

// Layer writes the files (image path → local path) as a tar layer, links resolved, with
// fixed timestamps and owners, parent directories first.
func Layer(files map[string]string) ([]byte, error) {
	var paths []string
	for p := range files {
		paths = append(paths, p)
	}
	sort.Strings(paths)
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	dirs := map[string]bool{}
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
