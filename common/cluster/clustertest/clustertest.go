// Package clustertest is a cluster.Getter for command tests, backed by client-go's fake
// clientset.
package clustertest

import (
	"errors"
	"sync"

	"k8s.io/client-go/discovery/cached/memory"

	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/fake"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
)

// Getter serves a fake clientset.
type Getter struct {
	Client *fake.Clientset
	NS     string

	// Unreachable, when set, is the error of every discovery call.
	Unreachable error

	mu   sync.Mutex
	logs map[string]string // pod logs of RunNodes
}

// New returns a Getter whose clientset holds objects.
func New(objects ...runtime.Object) *Getter {
	return &Getter{Client: fake.NewClientset(objects...), NS: "default"}
}

var errNoREST = errors.New("no REST config in command tests")

// Clientset returns the fake clientset.
func (g *Getter) Clientset() (kubernetes.Interface, error) { return clientset{g.Client, g}, nil }

// Namespace returns the configured namespace.
func (g *Getter) Namespace() (string, bool, error) { return g.NS, false, nil }

func (g *Getter) ToRESTConfig() (*rest.Config, error) { return nil, errNoREST }

// ToDiscoveryClient returns the fake's discovery (its server version is the fake's
// FakedServerVersion; with Unreachable set, an error).
func (g *Getter) ToDiscoveryClient() (discovery.CachedDiscoveryInterface, error) {
	if g.Unreachable != nil {
		return nil, g.Unreachable
	}
	return memory.NewMemCacheClient(g.Client.Discovery()), nil
}

func (g *Getter) ToRESTMapper() (meta.RESTMapper, error) { return nil, errNoREST }

func (g *Getter) ToRawKubeConfigLoader() clientcmd.ClientConfig {
	return clientcmd.NewDefaultClientConfig(*clientcmdapi.NewConfig(), nil)
}

// SetLog gives a pod the log GetLogs answers with (a pod the test made, not RunNodes).
func (g *Getter) SetLog(pod, log string) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.logs == nil {
		g.logs = map[string]string{}
	}
	g.logs[pod] = log
}
