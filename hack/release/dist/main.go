// Command dist builds the release archives of kubectl-gpu, byte for byte the same for the
// same version and commit: the binary (CGO off, -trimpath, no build ID), LICENSE, README.md
// and the Helm plugin manifest, as .tar.gz (linux, darwin) or .zip (windows), with fixed
// timestamps, owners and order, and checksums.txt. With -krew it renders the Krew manifest
// from .krew.yaml the way krew-release-bot does, with the local archives' checksums.
//
//	go run ./hack/release/dist -version v0.1.0 [-out dist] [-platforms linux/amd64,...]
//	go run ./hack/release/dist -version v0.1.0 -krew krew/gpu.yaml
package main

import (
	"archive/tar"
	"archive/zip"
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"text/template"
	"time"
)

// Platforms released.
var Platforms = []string{"linux/amd64", "linux/arm64", "darwin/amd64", "darwin/arm64", "windows/amd64", "windows/arm64"}

// epoch is the timestamp of every archive entry (reproducible builds).
var epoch = time.Date(2000, 1, 1, 0, 0, 0, 0, time.UTC)

const pkg = "github.com/kubectl-gpu/kubectl-gpu"

func main() {
	version := flag.String("version", "", "release version, vX.Y.Z")
	out := flag.String("out", "dist", "output directory")
	platforms := flag.String("platforms", strings.Join(Platforms, ","), "os/arch list")
	krew := flag.String("krew", "", "render the Krew manifest to this file from .krew.yaml and the archives in -out")
	flag.Parse()
	if !strings.HasPrefix(*version, "v") {
		fatal(fmt.Errorf("-version must look like v1.2.3, got %q", *version))
	}
	if *krew != "" {
		fatal(RenderKrew(".krew.yaml", *krew, *version, *out))
		return
	}
	fatal(Build(*version, *out, strings.Split(*platforms, ",")))
}

func fatal(err error) {
	if err != nil {
		fmt.Fprintln(os.Stderr, "dist:", err)
		os.Exit(1)
	}
}

// ArchiveName is the archive of a platform.
func ArchiveName(version, osName, arch string) string {
	ext := ".tar.gz"
	if osName == "windows" {
		ext = ".zip"
	}
	return fmt.Sprintf("kubectl-gpu_%s_%s_%s%s", version, osName, arch, ext)
}

// Build writes the archives and checksums.txt into out.
func Build(version, out string, platforms []string) error {
	if err := os.MkdirAll(out, 0o755); err != nil {
		return err
	}
	commit, _ := exec.Command("git", "rev-parse", "--short", "HEAD").Output()
	ldflags := fmt.Sprintf("-s -w -buildid= -X %s/common/buildinfo.Version=%s -X %s/common/buildinfo.Commit=%s", pkg, version, pkg, strings.TrimSpace(string(commit)))
	var sums []string
	for _, p := range platforms {
		osName, arch, _ := strings.Cut(p, "/")
		bin := "kubectl-gpu"
		if osName == "windows" {
			bin += ".exe"
		}
		tmp, err := os.MkdirTemp("", "kubectl-gpu-dist-")
		if err != nil {
			return err
		}
		defer os.RemoveAll(tmp)
		cmd := exec.Command("go", "build", "-trimpath", "-buildvcs=false", "-ldflags", ldflags, "-o", filepath.Join(tmp, bin), "./plugins/kubectl-gpu")
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS="+osName, "GOARCH="+arch)
		cmd.Stderr = os.Stderr
		if err := cmd.Run(); err != nil {
			return fmt.Errorf("build %s: %w", p, err)
		}
		files := map[string]string{bin: filepath.Join(tmp, bin), "LICENSE": "LICENSE", "README.md": "README.md", "plugin.yaml": "plugins/helm/plugin.yaml"}
		var data []byte
		if osName == "windows" {
			data, err = zipArchive(files)
		} else {
			data, err = tarGz(files)
		}
		if err != nil {
			return err
		}
		name := ArchiveName(version, osName, arch)
		if err := os.WriteFile(filepath.Join(out, name), data, 0o644); err != nil {
			return err
		}
		sum := sha256.Sum256(data)
		sums = append(sums, hex.EncodeToString(sum[:])+"  "+name)
		fmt.Fprintf(os.Stderr, "dist: %s (%d bytes)\n", name, len(data))
	}
	sort.Strings(sums)
	return os.WriteFile(filepath.Join(out, "checksums.txt"), []byte(strings.Join(sums, "\n")+"\n"), 0o644)
}

func sortedNames(files map[string]string) []string {
	names := make([]string, 0, len(files))
	for n := range files {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

func mode(name string) int64 {
	if strings.HasPrefix(name, "kubectl-gpu") {
		return 0o755
	}
	return 0o644
}

func tarGz(files map[string]string) ([]byte, error) {
	var buf bytes.Buffer
	gz, _ := gzip.NewWriterLevel(&buf, gzip.BestCompression)
	gz.ModTime = epoch
	tw := tar.NewWriter(gz)
	for _, name := range sortedNames(files) {
		b, err := os.ReadFile(files[name])
		if err != nil {
			return nil, err
		}
		hdr := &tar.Header{Name: name, Mode: mode(name), Size: int64(len(b)), ModTime: epoch, Format: tar.FormatPAX, Uname: "root", Gname: "root"}
		if err := tw.WriteHeader(hdr); err != nil {
			return nil, err
		}
		if _, err := tw.Write(b); err != nil {
			return nil, err
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	if err := gz.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

func zipArchive(files map[string]string) ([]byte, error) {
	var buf bytes.Buffer
	zw := zip.NewWriter(&buf)
	for _, name := range sortedNames(files) {
		b, err := os.ReadFile(files[name])
		if err != nil {
			return nil, err
		}
		hdr := &zip.FileHeader{Name: name, Method: zip.Deflate, Modified: epoch}
		hdr.SetMode(os.FileMode(mode(name)))
		w, err := zw.CreateHeader(hdr)
		if err != nil {
			return nil, err
		}
		if _, err := io.Copy(w, bytes.NewReader(b)); err != nil {
			return nil, err
		}
	}
	if err := zw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// RenderKrew renders the krew-release-bot template: {{ .TagName }} and
// {{ addURIAndSha "URL" .TagName }}, which becomes the uri and the sha256 of the archive the
// URL names (read from dir instead of downloading it).
func RenderKrew(tmplPath, outPath, version, dir string) error {
	src, err := os.ReadFile(tmplPath)
	if err != nil {
		return err
	}
	funcs := template.FuncMap{
		"addURIAndSha": func(url, tag string) (string, error) {
			url = strings.ReplaceAll(url, "{{ .TagName }}", tag)
			b, err := os.ReadFile(filepath.Join(dir, filepath.Base(url)))
			if err != nil {
				return "", fmt.Errorf("archive for %s: %w (run make dist first)", url, err)
			}
			sum := sha256.Sum256(b)
			return fmt.Sprintf("uri: %s\n    sha256: %s", url, hex.EncodeToString(sum[:])), nil
		},
	}
	t, err := template.New(filepath.Base(tmplPath)).Funcs(funcs).Parse(string(src))
	if err != nil {
		return err
	}
	var buf bytes.Buffer
	if err := t.Execute(&buf, map[string]string{"TagName": version}); err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(outPath), 0o755); err != nil {
		return err
	}
	return os.WriteFile(outPath, buf.Bytes(), 0o644)
}
