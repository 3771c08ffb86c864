// Package operatortest gives command tests an operator client on Helm's in-memory release
// store and fake Kubernetes clients.
package operatortest

import (
	"io"

	"helm.sh/helm/v3/pkg/action"
	"helm.sh/helm/v3/pkg/chartutil"
	"helm.sh/helm/v3/pkg/cli"
	"helm.sh/helm/v3/pkg/kube"
	kubefake "helm.sh/helm/v3/pkg/kube/fake"
	"helm.sh/helm/v3/pkg/storage"
	"k8s.io/client-go/dynamic"

	"github.com/kubectl-gpu/kubectl-gpu/common/cluster"
	"github.com/kubectl-gpu/kubectl-gpu/common/helmrelease"
	op "github.com/kubectl-gpu/kubectl-gpu/common/operator"
)

// NewClient returns a client maker (helmflags.ClientFunc's shape) whose Helm keeps releases
// in releases and applies nothing (Helm's printing fake), whose clientset is the getter's and
// whose dynamic client is dyn.
func NewClient(releases *storage.Storage, dyn dynamic.Interface) func(g cluster.Getter, ns string, log io.Writer) (*op.Client, error) {
	return NewClientWithKube(releases, dyn, &kubefake.PrintingKubeClient{Out: io.Discard})
}

// NewClientWithKube is NewClient with Helm's Kubernetes client given (a fake that refuses
// what the API server would).
func NewClientWithKube(releases *storage.Storage, dyn dynamic.Interface, kc kube.Interface) func(g cluster.Getter, ns string, log io.Writer) (*op.Client, error) {
	return func(g cluster.Getter, ns string, log io.Writer) (*op.Client, error) {
		cs, err := g.Clientset()
		if err != nil {
			return nil, err
		}
		cfg := &action.Configuration{Releases: releases, KubeClient: kc,
			Capabilities: chartutil.DefaultCapabilities, Log: func(string, ...any) {}}
		return &op.Client{Client: &helmrelease.Client{Namespace: ns, Helm: &helmrelease.Helm{Config: cfg, Settings: cli.New(), Namespace: ns}, CS: cs, Dyn: dyn, Log: log}}, nil
	}
}
