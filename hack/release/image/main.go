// Command image assembles the multi-arch node-agent image without a Docker engine
// (hack/release/ociimage): for each architecture, the agent binary built for it (cgo, for go-nvml),
// nsenter and the shared libraries both load, taken from Debian's packages for that
// architecture (hack/release/agent-sysroot.sh) — what nodeimages/agent/Dockerfile installs — as one
// layer on an empty base, with the image config the Dockerfile gives. It writes a
// docker-loadable tarball per architecture and, with -oci, an OCI layout whose index holds
// every architecture under the tag (`crane push`, `skopeo copy oci:DIR:TAG docker://...`).
//
//	go run ./hack/release/image -arch amd64,arm64 -agent 'bin/linux_{arch}/gpu-node-agent' \
//	  -sysroot "$HOME/.cache/kubectl-gpu/sysroot/{arch}" -tag ghcr.io/kubectl-gpu/gpu-node-agent:v0.1.0 \
//	  -out dist -oci dist/gpu-node-agent_v0.1.0_oci
package main

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"

	"github.com/kubectl-gpu/kubectl-gpu/hack/release/ociimage"
)

func main() {
	archs := flag.String("arch", runtime.GOARCH, "comma-separated architectures (amd64, arm64)")
	agent := flag.String("agent", "bin/linux_{arch}/gpu-node-agent", "agent binary per architecture ({arch} is replaced)")
	sysroot := flag.String("sysroot", "", "run-time files per architecture ({arch} is replaced; empty: this machine's, for its own architecture only)")
	tag := flag.String("tag", "ghcr.io/kubectl-gpu/gpu-node-agent:v0.0.0-dev", "image reference")
	out := flag.String("out", "dist", "directory for the per-architecture tarballs")
	oci := flag.String("oci", "", "also write an OCI layout holding the multi-arch index to this directory")
	flag.Parse()
	if err := build(strings.Split(*archs, ","), *agent, *sysroot, *tag, *out, *oci); err != nil {
		fmt.Fprintln(os.Stderr, "image:", err)
		os.Exit(1)
	}
}

func build(archs []string, agent, sysroot, tag, out, oci string) error {
	ref, err := name.NewTag(tag)
	if err != nil {
		return fmt.Errorf("tag %q: %w", tag, err)
	}
	idx := v1.ImageIndex(empty.Index)
	for _, arch := range archs {
		bin := strings.ReplaceAll(agent, "{arch}", arch)
		root := strings.ReplaceAll(sysroot, "{arch}", arch)
		spec, err := ociimage.AgentSpec(bin, root, arch)
		if err != nil {
			return fmt.Errorf("linux/%s: %w", arch, err)
		}
		img, err := ociimage.Build(spec)
		if err != nil {
			return err
		}
		tarPath := filepath.Join(out, fmt.Sprintf("gpu-node-agent_%s_linux_%s.tar", ref.TagStr(), arch))
		if err := ociimage.WriteTarball(tarPath, tag, img); err != nil {
			return err
		}
		d, _ := img.Digest()
		fmt.Fprintf(os.Stderr, "image: %s linux/%s %s (%d files) -> %s\n", tag, arch, d, len(spec.Files), tarPath)
		idx = mutate.AppendManifests(idx, mutate.IndexAddendum{
			Add:        img,
			Descriptor: v1.Descriptor{Platform: &v1.Platform{OS: "linux", Architecture: arch}},
		})
	}
	if oci == "" {
		return nil
	}
	if err := os.RemoveAll(oci); err != nil {
		return err
	}
	p, err := layout.Write(oci, empty.Index)
	if err != nil {
		return err
	}
	if err := p.AppendIndex(idx, layout.WithAnnotations(map[string]string{
		"org.opencontainers.image.ref.name": ref.TagStr(),
		"io.containerd.image.name":          ref.Name(),
	})); err != nil {
		return err
	}
	d, _ := idx.Digest()
	fmt.Fprintf(os.Stderr, "image: %s index %s (%s) -> %s\n", tag, d, strings.Join(archs, ", "), oci)
	return nil
}
