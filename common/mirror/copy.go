package mirror

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"

	"github.com/kubectl-gpu/kubectl-gpu/common/cliexit"
)

// Target is a mirror: a registry with an optional path prefix, such as
// "registry.example.com:5000/gpu".
type Target struct {
	Registry name.Registry
	Prefix   string
	Insecure bool
}

// ParseTarget reads REGISTRY[/PREFIX]. insecure allows plain HTTP.
func ParseTarget(s string, insecure bool) (Target, error) {
	s = strings.TrimSuffix(strings.TrimPrefix(strings.TrimPrefix(s, "https://"), "http://"), "/")
	host, prefix, _ := strings.Cut(s, "/")
	var opts []name.Option
	if insecure {
		opts = append(opts, name.Insecure)
	}
	reg, err := name.NewRegistry(host, append(opts, name.StrictValidation)...)
	if err != nil || host == "" || !strings.ContainsAny(host, ".:") && host != "localhost" {
		return Target{}, cliexit.Usagef("mirror %q is not REGISTRY[/PREFIX] (such as registry.example.com:5000/gpu)", s)
	}
	if prefix != "" {
		if _, err := name.NewRepository(host+"/"+prefix, opts...); err != nil {
			return Target{}, cliexit.Usagef("mirror prefix %q is not a repository path: %v", prefix, err)
		}
	}
	return Target{Registry: reg, Prefix: prefix, Insecure: insecure}, nil
}

// String is REGISTRY[/PREFIX].
func (t Target) String() string {
	if t.Prefix == "" {
		return t.Registry.Name()
	}
	return t.Registry.Name() + "/" + t.Prefix
}

// Map is where an image lives in the mirror: the same path without the source registry,
// under the mirror's prefix (nvcr.io/nvidia/k8s/cuda-sample:x → MIRROR/nvidia/k8s/cuda-sample:x).
func (t Target) Map(ref string) (string, error) {
	r, err := name.ParseReference(ref)
	if err != nil {
		return "", fmt.Errorf("image %q: %w", ref, err)
	}
	path := r.Context().RepositoryStr()
	sep, id := ":", r.Identifier()
	if _, ok := r.(name.Digest); ok {
		sep = "@"
	}
	return t.String() + "/" + path + sep + id, nil
}

// MapRepository is where a chart value repository (a registry and path, no image) lives in
// the mirror.
func (t Target) MapRepository(repo string) string {
	host, path, ok := strings.Cut(repo, "/")
	if !ok || !strings.ContainsAny(host, ".:") && host != "localhost" {
		path = repo // docker.io's short form
	}
	return t.String() + "/" + path
}

func (t Target) nameOpts() []name.Option {
	if t.Insecure {
		return []name.Option{name.Insecure}
	}
	return nil
}

// CopyOptions of Copy.
type CopyOptions struct {
	Parallel int
	// SourceInsecure allows plain HTTP for the source registries.
	SourceInsecure bool
	// Progress receives one line per image as it is done.
	Progress io.Writer
	// Transport for every registry (default: remote's).
	Transport http.RoundTripper
}

// CopyResult is one image's copy.
type CopyResult struct {
	Image  string `json:"image"`
	Mirror string `json:"mirror"`
	Digest string `json:"digest"`
	// Skipped: the mirror already held the same digest.
	Skipped bool   `json:"skipped,omitempty"`
	Error   string `json:"error,omitempty"`
}

func (o CopyOptions) remote(ctx context.Context) []remote.Option {
	// One blob at a time within an image, so --parallel is the number of blobs in flight
	// (go-containerregistry's default is 4 per image). Memory is the same either way (each
	// blob streams); on 127.0.0.1 with 2 cores this was no slower (2026-12-01,
	// BenchmarkMirrorTo: 0.97-1.05x crane's sequential copy against 1.11-1.15x).
	opts := []remote.Option{remote.WithContext(ctx), remote.WithAuthFromKeychain(authn.DefaultKeychain), remote.WithJobs(1)}
	if o.Transport != nil {
		opts = append(opts, remote.WithTransport(o.Transport))
	}
	return opts
}

// Copy copies every image into the mirror with every platform of an index and its digest,
// skipping the ones the mirror already holds with the same digest (a second run, or a run
// resumed after an interruption, copies only what is missing), Parallel at a time. Layers
// stream from one registry to the other; nothing is held whole in memory.
func Copy(ctx context.Context, images []string, t Target, o CopyOptions) ([]CopyResult, error) {
	if o.Parallel <= 0 {
		o.Parallel = 4
	}
	var srcOpts []name.Option
	if o.SourceInsecure {
		srcOpts = append(srcOpts, name.Insecure)
	}
	if len(images) > 0 {
		dst, err := t.Map(images[0])
		if err != nil {
			return nil, cliexit.Usagef("%v", err)
		}
		if err := t.CheckPush(dst, o); err != nil {
			return nil, err
		}
	}
	results := make([]CopyResult, len(images))
	sem := make(chan struct{}, o.Parallel)
	var wg sync.WaitGroup
	var mu sync.Mutex
	for i, img := range images {
		wg.Add(1)
		sem <- struct{}{}
		go func(i int, img string) {
			defer wg.Done()
			defer func() { <-sem }()
			r := copyOne(ctx, img, t, srcOpts, o)
			results[i] = r
			if o.Progress != nil {
				mu.Lock()
				state := "copied"
				switch {
				case r.Error != "":
					state = "error: " + r.Error
				case r.Skipped:
					state = "present"
				}
				fmt.Fprintf(o.Progress, "%s -> %s: %s\n", r.Image, r.Mirror, state)
				mu.Unlock()
			}
		}(i, img)
	}
	wg.Wait()
	if ctx.Err() != nil {
		return nil, cliexit.ErrInterrupted
	}
	var failed []string
	for _, r := range results {
		if r.Error != "" {
			failed = append(failed, r.Image+": "+r.Error)
		}
	}
	if len(failed) > 0 {
		return results, cliexit.Failuresf("%d of %d images not copied: %s", len(failed), len(images), strings.Join(failed, "; "))
	}
	return results, nil
}

// CheckPush asks the mirror, before anything is copied, whether it answers and takes a push
// to ref's repository with the credentials at hand (go-containerregistry's push check: the
// token handshake and an upload begun and cancelled). A mirror that does not answer, or
// wants credentials it is not given, is a usage error: nothing is copied.
func (t Target) CheckPush(ref string, o CopyOptions) error {
	dref, err := name.ParseReference(ref, t.nameOpts()...)
	if err != nil {
		return cliexit.Usagef("image %q: %v", ref, err)
	}
	tr := o.Transport
	if tr == nil {
		tr = remote.DefaultTransport
	}
	err = remote.CheckPushPermission(dref, authn.DefaultKeychain, tr)
	if err == nil {
		return nil
	}
	var te *transport.Error
	if errors.As(err, &te) && (te.StatusCode == http.StatusUnauthorized || te.StatusCode == http.StatusForbidden) {
		return cliexit.Usagef("%s; nothing was copied", registryError("push to", t.String(), err))
	}
	hint := "check --to"
	if !t.Insecure {
		hint += " (and --insecure for a registry without TLS)"
	}
	return cliexit.Usagef("the mirror %s cannot be written: %s: %s; nothing was copied", t, strings.ReplaceAll(err.Error(), "\n", " "), hint)
}

func copyOne(ctx context.Context, img string, t Target, srcOpts []name.Option, o CopyOptions) CopyResult {
	r := CopyResult{Image: img}
	dst, err := t.Map(img)
	if err != nil {
		r.Error = err.Error()
		return r
	}
	r.Mirror = dst
	src, err := name.ParseReference(img, srcOpts...)
	if err != nil {
		r.Error = err.Error()
		return r
	}
	dref, err := name.ParseReference(dst, t.nameOpts()...)
	if err != nil {
		r.Error = err.Error()
		return r
	}
	desc, err := remote.Get(src, o.remote(ctx)...)
	if err != nil {
		r.Error = registryError("read", img, err)
		return r
	}
	r.Digest = desc.Digest.String()
	if have, err := remote.Head(dref, o.remote(ctx)...); err == nil && have.Digest == desc.Digest {
		r.Skipped = true
		return r
	}
	if desc.MediaType.IsIndex() {
		idx, err := desc.ImageIndex()
		if err == nil {
			err = remote.WriteIndex(dref, idx, o.remote(ctx)...)
		}
		if err != nil {
			r.Error = registryError("write", dst, err)
		}
		return r
	}
	im, err := desc.Image()
	if err == nil {
		err = remote.Write(dref, im, o.remote(ctx)...)
	}
	if err != nil {
		r.Error = registryError("write", dst, err)
	}
	return r
}

// registryError says what failed in one line, with how to log in on a 401.
func registryError(doing, ref string, err error) string {
	var te *transport.Error
	if errors.As(err, &te) && (te.StatusCode == http.StatusUnauthorized || te.StatusCode == http.StatusForbidden) {
		return fmt.Sprintf("cannot %s %s: the registry wants credentials (HTTP %d): log in with 'docker login' or 'crane auth login' (the Docker config and its credential helpers are read)", doing, ref, te.StatusCode)
	}
	return fmt.Sprintf("cannot %s %s: %s", doing, ref, strings.ReplaceAll(err.Error(), "\n", " "))
}

// RefAnnotation names an image in the OCI layout (the source reference).
const RefAnnotation = "org.opencontainers.image.ref.name"

// ToArchive writes every image (all platforms of an index) into one OCI layout at dir,
// each named by its source reference, for carrying across the air gap. An image already in
// the layout is not written again.
func ToArchive(ctx context.Context, images []string, dir string, o CopyOptions) error {
	p, err := layout.FromPath(dir)
	if err != nil {
		if p, err = layout.Write(dir, empty.Index); err != nil {
			return cliexit.Usagef("cannot write the OCI layout %s: %v", dir, err)
		}
	}
	have := map[string]bool{}
	if idx, err := p.ImageIndex(); err == nil {
		if m, err := idx.IndexManifest(); err == nil {
			for _, d := range m.Manifests {
				have[d.Annotations[RefAnnotation]] = true
			}
		}
	}
	var srcOpts []name.Option
	if o.SourceInsecure {
		srcOpts = append(srcOpts, name.Insecure)
	}
	for _, img := range images {
		if ctx.Err() != nil {
			return cliexit.ErrInterrupted
		}
		if have[img] {
			continue
		}
		src, err := name.ParseReference(img, srcOpts...)
		if err != nil {
			return cliexit.Usagef("image %q: %v", img, err)
		}
		desc, err := remote.Get(src, o.remote(ctx)...)
		if err != nil {
			return cliexit.Failuresf("%s", registryError("read", img, err))
		}
		ann := layout.WithAnnotations(map[string]string{RefAnnotation: img})
		if desc.MediaType.IsIndex() {
			idx, err := desc.ImageIndex()
			if err == nil {
				err = p.AppendIndex(idx, ann)
			}
			if err != nil {
				return cliexit.Failuresf("cannot write %s into %s: %v", img, dir, err)
			}
		} else {
			im, err := desc.Image()
			if err == nil {
				err = p.AppendImage(im, ann)
			}
			if err != nil {
				return cliexit.Failuresf("cannot write %s into %s: %v", img, dir, err)
			}
		}
		if o.Progress != nil {
			fmt.Fprintf(o.Progress, "%s -> %s\n", img, dir)
		}
	}
	return nil
}

// FromArchive pushes every image of an OCI layout written by ToArchive into the mirror,
// where Map puts it; images the mirror holds with the same digest are skipped.
func FromArchive(ctx context.Context, dir string, t Target, o CopyOptions) ([]CopyResult, error) {
	p, err := layout.FromPath(dir)
	if err != nil {
		return nil, cliexit.Usagef("%s is not an OCI layout (no index.json / oci-layout): %v", dir, err)
	}
	idx, err := p.ImageIndex()
	if err != nil {
		return nil, cliexit.Usagef("%s is not an OCI layout: %v", dir, err)
	}
	m, err := idx.IndexManifest()
	if err != nil {
		return nil, cliexit.Usagef("%s is not an OCI layout: %v", dir, err)
	}
	for _, d := range m.Manifests {
		if img := d.Annotations[RefAnnotation]; img != "" {
			dst, err := t.Map(img)
			if err != nil {
				return nil, cliexit.Usagef("image %q in %s: %v", img, dir, err)
			}
			if err := t.CheckPush(dst, o); err != nil {
				return nil, err
			}
			break
		}
	}
	var results []CopyResult
	for _, d := range m.Manifests {
		if ctx.Err() != nil {
			return nil, cliexit.ErrInterrupted
		}
		img := d.Annotations[RefAnnotation]
		if img == "" {
			continue
		}
		r := CopyResult{Image: img, Digest: d.Digest.String()}
		dst, err := t.Map(img)
		if err != nil {
			return nil, cliexit.Usagef("image %q in %s: %v", img, dir, err)
		}
		r.Mirror = dst
		dref, err := name.ParseReference(dst, t.nameOpts()...)
		if err != nil {
			return nil, cliexit.Usagef("%v", err)
		}
		if have, err := remote.Head(dref, o.remote(ctx)...); err == nil && have.Digest == d.Digest {
			r.Skipped = true
			results = append(results, r)
			continue
		}
		err = writeFromLayout(ctx, idx, d, dref, o)
		if err != nil {
			r.Error = registryError("write", dst, err)
		}
		results = append(results, r)
		if o.Progress != nil {
			fmt.Fprintf(o.Progress, "%s -> %s\n", img, dst)
		}
	}
	for _, r := range results {
		if r.Error != "" {
			return results, cliexit.Failuresf("%s", r.Error)
		}
	}
	return results, nil
}

func writeFromLayout(ctx context.Context, idx v1.ImageIndex, d v1.Descriptor, dref name.Reference, o CopyOptions) error {
	if d.MediaType.IsIndex() {
		ii, err := idx.ImageIndex(d.Digest)
		if err != nil {
			return err
		}
		return remote.WriteIndex(dref, ii, o.remote(ctx)...)
	}
	im, err := idx.Image(d.Digest)
	if err != nil {
		return err
	}
	return remote.Write(dref, im, o.remote(ctx)...)
}
