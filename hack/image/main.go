// Command image assembles the node-agent image without a Docker engine (hack/ociimage): the
// agent binary (built for this machine, cgo for go-nvml), nsenter, and the shared libraries
// both load (found with ldd), as one layer on an empty base, with the image config the
// Dockerfile gives. It writes a docker-loadable tarball (and an OCI layout with -oci).
//
//	go run ./hack/image -agent bin/gpu-node-agent -tag ghcr.io/kubectl-gpu/gpu-node-agent:v0.1.0 -out dist/gpu-node-agent.tar
//
// Only the machine's own architecture: the agent needs a C toolchain for its target.
package main

import (
	"flag"
	"fmt"
	"os"

	"github.com/kubectl-gpu/kubectl-gpu/hack/ociimage"
)

func main() {
	agent := flag.String("agent", "bin/gpu-node-agent", "agent binary")
	tag := flag.String("tag", "ghcr.io/kubectl-gpu/gpu-node-agent:v0.0.0-dev", "image reference")
	out := flag.String("out", "dist/gpu-node-agent.tar", "docker-loadable tarball to write")
	oci := flag.String("oci", "", "also write an OCI layout to this directory")
	flag.Parse()
	if err := build(*agent, *tag, *out, *oci); err != nil {
		fmt.Fprintln(os.Stderr, "image:", err)
		os.Exit(1)
	}
}

func build(agent, tag, out, oci string) error {
	spec, err := ociimage.AgentSpec(agent)
	if err != nil {
		return err
	}
	img, err := ociimage.Build(spec)
	if err != nil {
		return err
	}
	if err := ociimage.WriteTarball(out, tag, img); err != nil {
		return err
	}
	if oci != "" {
		if err := ociimage.WriteLayout(oci, img); err != nil {
			return err
		}
	}
	d, _ := img.Digest()
	fmt.Fprintf(os.Stderr, "image: %s %s (%d files) -> %s\n", tag, d, len(spec.Files), out)
	return nil
}
