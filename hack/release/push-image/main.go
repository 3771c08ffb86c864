// Command push-image pushes the node-agent image's multi-arch OCI layout (make image) to a
// registry, digests kept: what the release workflow runs, and what the tests run against a
// registry on 127.0.0.1.
//
//	go run ./hack/release/push-image -oci dist/gpu-node-agent_vX_oci -to ghcr.io/kubectl-gpu/gpu-node-agent:vX [-insecure]
//
// Credentials: REGISTRY_USERNAME and REGISTRY_PASSWORD when set, else the Docker config.
package main

import (
	"flag"
	"fmt"
	"os"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/remote"
)

func main() {
	oci := flag.String("oci", "", "OCI layout directory written by make image")
	to := flag.String("to", "", "image reference to push to")
	insecure := flag.Bool("insecure", false, "the registry speaks plain HTTP")
	flag.Parse()
	if err := push(*oci, *to, *insecure); err != nil {
		fmt.Fprintln(os.Stderr, "push-image:", err)
		os.Exit(1)
	}
}

func push(dir, to string, insecure bool) error {
	var opts []name.Option
	if insecure {
		opts = append(opts, name.Insecure)
	}
	ref, err := name.ParseReference(to, opts...)
	if err != nil {
		return err
	}
	p, err := layout.FromPath(dir)
	if err != nil {
		return fmt.Errorf("%s is not an OCI layout: %w", dir, err)
	}
	root, err := p.ImageIndex()
	if err != nil {
		return err
	}
	m, err := root.IndexManifest()
	if err != nil {
		return err
	}
	if len(m.Manifests) != 1 {
		return fmt.Errorf("%s holds %d entries, want the one multi-arch index make image writes", dir, len(m.Manifests))
	}
	idx, err := root.ImageIndex(m.Manifests[0].Digest)
	if err != nil {
		return err
	}
	auth := remote.WithAuthFromKeychain(authn.DefaultKeychain)
	if u := os.Getenv("REGISTRY_USERNAME"); u != "" {
		auth = remote.WithAuth(&authn.Basic{Username: u, Password: os.Getenv("REGISTRY_PASSWORD")})
	}
	if err := remote.WriteIndex(ref, idx, auth); err != nil {
		return err
	}
	d, _ := idx.Digest()
	fmt.Printf("pushed %s@%s\n", ref, d)
	return nil
}
