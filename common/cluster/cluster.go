// Package cluster gives commands their access to the Kubernetes API: one narrow interface
// over cli-runtime's ConfigFlags (the same flags kubectl has), client settings fit for work
// over hundreds of nodes, and errors that say what failed and what to do.
package cluster

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"strings"
	"sync"
	"syscall"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/cli-runtime/pkg/genericclioptions"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/kubectl-gpu/kubectl-gpu/common/cliexit"
)

// Client QPS and burst. client-go's defaults (5/10) throttle a command that touches
// hundreds of nodes on the client; the API server's priority and fairness still applies.
const (
	DefaultQPS   = 200
	DefaultBurst = 400
)

// Getter is what commands need from the cluster: cli-runtime's RESTClientGetter (which
// Helm's action.Configuration takes as it is) and a typed clientset.
type Getter interface {
	genericclioptions.RESTClientGetter
	// Clientset returns a clientset for built-in types that talks protobuf.
	Clientset() (kubernetes.Interface, error)
	// Namespace returns the namespace from --namespace or the kubeconfig context, and
	// whether it was given explicitly.
	Namespace() (string, bool, error)
}

// NewConfigFlags returns kubectl's flags with raised client rate limits.
func NewConfigFlags() *genericclioptions.ConfigFlags {
	f := genericclioptions.NewConfigFlags(true)
	f.WrapConfigFn = func(c *rest.Config) *rest.Config {
		c.QPS = DefaultQPS
		c.Burst = DefaultBurst
		return c
	}
	return f
}

type getter struct {
	*genericclioptions.ConfigFlags
	once sync.Once
	cs   kubernetes.Interface
	err  error
}

// NewGetter wraps ConfigFlags. The clientset is made once and shared.
func NewGetter(f *genericclioptions.ConfigFlags) Getter { return &getter{ConfigFlags: f} }

// ToRESTConfig refuses to fall back to http://localhost:8080 when no kubeconfig exists:
// that is never what a user of this tool means.
func (g *getter) ToRESTConfig() (*rest.Config, error) {
	if err := g.configured(); err != nil {
		return nil, err
	}
	cfg, err := g.ConfigFlags.ToRESTConfig()
	if err != nil {
		return nil, ConfigError(err)
	}
	return cfg, nil
}

// ToDiscoveryClient is ConfigFlags' with the same check.
func (g *getter) ToDiscoveryClient() (discovery.CachedDiscoveryInterface, error) {
	if err := g.configured(); err != nil {
		return nil, err
	}
	return g.ConfigFlags.ToDiscoveryClient()
}

func (g *getter) configured() error {
	if g.APIServer != nil && *g.APIServer != "" {
		return nil
	}
	raw, err := g.ToRawKubeConfigLoader().RawConfig()
	if err != nil {
		return ConfigError(err)
	}
	if len(raw.Clusters) == 0 && os.Getenv("KUBERNETES_SERVICE_HOST") == "" {
		return ConfigError(clientcmd.ErrEmptyConfig)
	}
	return nil
}

func (g *getter) Clientset() (kubernetes.Interface, error) {
	g.once.Do(func() {
		cfg, err := g.ToRESTConfig()
		if err != nil {
			g.err = ConfigError(err)
			return
		}
		cfg = rest.CopyConfig(cfg)
		// Built-in types in protobuf: several times cheaper to decode than JSON over
		// thousands of pods.
		cfg.AcceptContentTypes = runtime.ContentTypeProtobuf + "," + runtime.ContentTypeJSON
		cfg.ContentType = runtime.ContentTypeProtobuf
		g.cs, g.err = kubernetes.NewForConfig(cfg)
	})
	return g.cs, g.err
}

func (g *getter) Namespace() (string, bool, error) {
	ns, explicit, err := g.ToRawKubeConfigLoader().Namespace()
	if err != nil {
		return "", false, ConfigError(err)
	}
	return ns, explicit, nil
}

// ConfigError turns a kubeconfig loading error into a one-line usage error (exit 2).
func ConfigError(err error) error {
	if err == nil {
		return nil
	}
	var ce *cliexit.Error
	if errors.As(err, &ce) {
		return err
	}
	msg := firstLine(err.Error())
	switch {
	case clientcmd.IsEmptyConfig(err):
		return cliexit.Usagef("no cluster configured: set KUBECONFIG, pass --kubeconfig, or create ~/.kube/config")
	case strings.Contains(msg, "context was not found") || strings.Contains(msg, "does not exist") && strings.Contains(msg, "context"):
		return cliexit.Usagef("kubeconfig: %s: check the name with 'kubectl config get-contexts'", msg)
	}
	return cliexit.Usagef("cannot load the kubeconfig: %s: check --kubeconfig / KUBECONFIG", msg)
}

// APIError explains an error from the API server for the action described by doing (such
// as "list nodes") and gives it the right exit code: configuration and permission problems
// are exit 2, anything else exit 1.
func APIError(doing string, err error) error {
	if err == nil {
		return nil
	}
	var ce *cliexit.Error
	if errors.As(err, &ce) {
		return err
	}
	switch {
	case errors.Is(err, context.Canceled):
		// Cut short by the caller (Ctrl-C): not the cluster's fault; the chain is kept so
		// that the exit code says interrupted.
		return fmt.Errorf("cannot %s: %w", doing, err)
	case apierrors.IsForbidden(err):
		return cliexit.Usagef("cannot %s: forbidden by RBAC (%s): ask a cluster admin for that permission", doing, forbiddenDetail(err))
	case apierrors.IsUnauthorized(err):
		return cliexit.Usagef("cannot %s: the cluster did not accept the credentials (expired token or certificate?): refresh the kubeconfig", doing)
	case isUnreachable(err):
		return cliexit.Usagef("cannot %s: the cluster is unreachable (%s): check --context / KUBECONFIG and that the API server is up", doing, firstLine(rootCause(err).Error()))
	}
	return cliexit.WithCode(cliexit.Failures, fmt.Errorf("cannot %s: %w", doing, err))
}

// IsRBACDenied tells an authorization refusal ("User … cannot create resource …") from the
// other 403s, such as an exceeded ResourceQuota.
func IsRBACDenied(err error) bool {
	if !apierrors.IsForbidden(err) {
		return false
	}
	m := err.Error()
	return strings.Contains(m, " cannot ") && strings.Contains(m, "resource") && !strings.Contains(m, "exceeded quota")
}

func forbiddenDetail(err error) string {
	var se apierrors.APIStatus
	if errors.As(err, &se) {
		return firstLine(se.Status().Message)
	}
	return firstLine(err.Error())
}

func isUnreachable(err error) bool {
	var ne net.Error
	var ue *url.Error
	var oe *net.OpError
	var dnsErr *net.DNSError
	switch {
	case errors.Is(err, syscall.ECONNREFUSED), errors.Is(err, syscall.EHOSTUNREACH), errors.Is(err, syscall.ENETUNREACH):
		return true
	case errors.As(err, &dnsErr), errors.As(err, &oe):
		return true
	case errors.As(err, &ue) && errors.As(err, &ne):
		return true
	}
	msg := err.Error()
	return strings.Contains(msg, "connection refused") || strings.Contains(msg, "no such host") ||
		strings.Contains(msg, "i/o timeout") || strings.Contains(msg, "x509:") || strings.Contains(msg, "tls:")
}

func rootCause(err error) error {
	for {
		u := errors.Unwrap(err)
		if u == nil {
			return err
		}
		err = u
	}
}

func firstLine(s string) string {
	s = strings.TrimSpace(s)
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		s = s[:i]
	}
	return s
}

// NamespaceOr returns --namespace when it was given, else def: the commands work in a
// namespace of their own, not in the kubeconfig context's.
func NamespaceOr(g Getter, def string) (string, error) {
	ns, explicit, err := g.Namespace()
	if err != nil {
		return "", err
	}
	if explicit {
		return ns, nil
	}
	return def, nil
}
