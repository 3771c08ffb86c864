// Package ociimage assembles container images without a Docker engine or registry
// (github.com/google/go-containerregistry): one tar layer of local files on an empty base,
// with fixed timestamps and owners so the same inputs give the same image. It serves
// `make image` (hack/release/image) and the images of the local cluster's real node.
package ociimage

import (
	"archive/tar"
	"bytes"
	"debug/elf"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
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

// Libs lists, as paths inside root, what the dynamic ELF file bin (a local path) loads: its
// program interpreter and its DT_NEEDED libraries, recursively, looked up in the library
// directories of its architecture inside root (Debian's multiarch layout), links resolved
// inside root. Static files load nothing. No ldd: the file may be for another architecture.
func Libs(root, bin string) ([]string, error) {
	seen := map[string]bool{}
	var out []string
	var walk func(local string) error
	walk = func(local string) error {
		f, err := elf.Open(local)
		if err != nil {
			return fmt.Errorf("read %s: %w", local, err)
		}
		defer f.Close()
		dirs, ok := libDirs[f.Machine]
		if !ok {
			return fmt.Errorf("%s: no library directories known for %v", local, f.Machine)
		}
		var deps []string
		for _, p := range f.Progs {
			if p.Type == elf.PT_INTERP {
				b, err := io.ReadAll(p.Open())
				if err != nil {
					return err
				}
				deps = append(deps, strings.TrimRight(string(b), "\x00"))
			}
		}
		needed, err := f.ImportedLibraries()
		if err != nil {
			return fmt.Errorf("%s: %w", local, err)
		}
		for _, n := range needed {
			found := ""
			for _, d := range dirs {
				if _, err := resolveIn(root, path.Join(d, n)); err == nil {
					found = path.Join(d, n)
					break
				}
			}
			if found == "" {
				return fmt.Errorf("%s needs %s, which is not in %s under %s", local, n, strings.Join(dirs, ", "), root)
			}
			deps = append(deps, found)
		}
		for _, d := range deps {
			if seen[d] {
				continue
			}
			seen[d] = true
			out = append(out, d)
			l, err := resolveIn(root, d)
			if err != nil {
				return fmt.Errorf("%s needs %s: %w", local, d, err)
			}
			if err := walk(l); err != nil {
				return err
			}
		}
		return nil
	}
	if err := walk(bin); err != nil {
		return nil, err
	}
	sort.Strings(out)
	return out, nil
}

// libDirs are where Debian's loader looks, per architecture.
var libDirs = map[elf.Machine][]string{
	elf.EM_X86_64:  {"/lib/x86_64-linux-gnu", "/usr/lib/x86_64-linux-gnu", "/lib64", "/lib", "/usr/lib"},
	elf.EM_AARCH64: {"/lib/aarch64-linux-gnu", "/usr/lib/aarch64-linux-gnu", "/lib", "/usr/lib"},
}

// resolveIn returns the local path of the image path p inside root, following symbolic
// links (absolute ones from root, as they would be read inside the image).
func resolveIn(root, p string) (string, error) {
	for hops := 0; hops < 40; hops++ {
		local := filepath.Join(root, filepath.FromSlash(p))
		fi, err := os.Lstat(local)
		if err != nil {
			return "", err
		}
		if fi.Mode()&os.ModeSymlink == 0 {
			return local, nil
		}
		t, err := os.Readlink(local)
		if err != nil {
			return "", err
		}
		if !path.IsAbs(t) {
			t = path.Join(path.Dir(p), t)
		}
		p = path.Clean(t)
	}
	return "", fmt.Errorf("%s: too many links under %s", p, root)
}

// WithLibs adds what every file in files loads (Libs), read from root at the same paths.
func WithLibs(root string, files map[string]string) error {
	var bins []string
	for _, local := range files {
		bins = append(bins, local)
	}
	sort.Strings(bins)
	for _, b := range bins {
		l, err := Libs(root, b)
		if err != nil {
			return err
		}
		for _, p := range l {
			local, err := resolveIn(root, p)
			if err != nil {
				return err
			}
			files[p] = local
		}
	}
	return nil
}

// AgentSpec is the node-agent image for arch: the agent binary (cgo, for go-nvml, built for
// arch), nsenter for apply mode, the shared libraries both load, and the config
// nodeimages/agent/Dockerfile gives. root holds the run-time files for arch: "/" (this
// machine, its own arch only) or a directory of Debian's packages (hack/release/agent-sysroot.sh).
func AgentSpec(agentBin, root, arch string) (Spec, error) {
	if arch == "" {
		arch = runtime.GOARCH
	}
	if root == "" {
		root = "/"
	}
	if root == "/" && arch != runtime.GOARCH {
		return Spec{}, fmt.Errorf("the %s image needs a root of %s files (hack/release/agent-sysroot.sh %s), not this machine's", arch, arch, arch)
	}
	nsenter, err := resolveIn(root, "/usr/bin/nsenter")
	if err != nil {
		return Spec{}, fmt.Errorf("nsenter (util-linux) is needed in the image: %w", err)
	}
	files := map[string]string{"/usr/local/bin/gpu-node-agent": agentBin, "/usr/bin/nsenter": nsenter}
	if err := WithLibs(root, files); err != nil {
		return Spec{}, err
	}
	return Spec{
		Files:      files,
		Entrypoint: []string{"/usr/local/bin/gpu-node-agent"},
		Cmd:        []string{"check"},
		User:       "65532:65532",
		Env:        []string{"PATH=/usr/local/bin:/usr/bin:/bin"},
		Arch:       arch,
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
