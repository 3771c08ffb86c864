package helmrelease

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"helm.sh/helm/v3/pkg/action"
	"helm.sh/helm/v3/pkg/chart"
	"helm.sh/helm/v3/pkg/chart/loader"
	"helm.sh/helm/v3/pkg/chartutil"
	"helm.sh/helm/v3/pkg/cli"
	"helm.sh/helm/v3/pkg/registry"
	"helm.sh/helm/v3/pkg/release"
	"helm.sh/helm/v3/pkg/storage/driver"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/cli-runtime/pkg/genericclioptions"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"

	"github.com/kubectl-gpu/kubectl-gpu/common/cliexit"
)

// Helm holds a Helm action configuration on the plugin's own kubectl flags, for one
// release namespace. The storage driver is Helm's (HELM_DRIVER, "secret" by default), so
// the helm CLI sees and acts on the same releases.
type Helm struct {
	Config    *action.Configuration
	Settings  *cli.EnvSettings
	Namespace string
}

// NewHelm initialises Helm on getter (the plugin's ConfigFlags) for namespace. debug
// receives Helm's log lines (nil: dropped).
func NewHelm(getter genericclioptions.RESTClientGetter, namespace string, debug io.Writer) (*Helm, error) {
	settings := cli.New()
	cfg := new(action.Configuration)
	logf := func(format string, v ...any) {
		if debug != nil {
			fmt.Fprintf(debug, format+"\n", v...)
		}
	}
	if err := cfg.Init(namespacedGetter{getter, namespace}, namespace, os.Getenv("HELM_DRIVER"), logf); err != nil {
		return nil, cliexit.Usagef("cannot set up Helm: %w", err)
	}
	rc, err := registry.NewClient(registry.ClientOptCredentialsFile(settings.RegistryConfig), registry.ClientOptWriter(io.Discard))
	if err != nil {
		return nil, cliexit.Usagef("cannot set up the OCI registry client: %w", err)
	}
	cfg.RegistryClient = rc
	return &Helm{Config: cfg, Settings: settings, Namespace: namespace}, nil
}

// namespacedGetter makes the release namespace the default namespace of Helm's kube client,
// whatever the kubeconfig context says.
type namespacedGetter struct {
	genericclioptions.RESTClientGetter
	ns string
}

func (g namespacedGetter) ToRawKubeConfigLoader() clientcmd.ClientConfig {
	return namespacedConfig{g.RESTClientGetter.ToRawKubeConfigLoader(), g.ns}
}

type namespacedConfig struct {
	inner clientcmd.ClientConfig
	ns    string
}

func (c namespacedConfig) Namespace() (string, bool, error) { return c.ns, true, nil }

func (c namespacedConfig) RawConfig() (clientcmdapi.Config, error) { return c.inner.RawConfig() }

func (c namespacedConfig) ClientConfig() (*rest.Config, error) { return c.inner.ClientConfig() }

func (c namespacedConfig) ConfigAccess() clientcmd.ConfigAccess { return c.inner.ConfigAccess() }

// ChartSource says where the chart comes from.
type ChartSource struct {
	// Name is the chart expected (ChartName when empty): a chart of another name is refused.
	Name string
	// DefaultRepo is the repository when Repo is empty (DefaultRepo when empty).
	DefaultRepo string
	// Chart is a local directory, a .tgz or an oci:// reference; empty: Name from Repo.
	Chart   string
	Repo    string
	Version string
	Devel   bool
	// VersionGiven: the user asked for Version. Helm ignores the version of a local chart;
	// this refuses one that is not the version asked for.
	VersionGiven bool
	// PlainHTTP reads an oci:// chart over plain HTTP (helm's --plain-http).
	PlainHTTP bool
}

// LoadChart finds the chart through Helm's own getters (repository cache and registry
// configuration honoured) and loads it.
func (h *Helm) LoadChart(src ChartSource) (*chart.Chart, error) {
	cpo := action.ChartPathOptions{Version: src.Version}
	if src.Devel && cpo.Version == "" {
		cpo.Version = ">0.0.0-0"
	}
	want, defRepo := src.Name, src.DefaultRepo
	if want == "" {
		return nil, fmt.Errorf("no chart name: a stack fills its ChartSource's Name and DefaultRepo")
	}
	name := src.Chart
	if name == "" {
		name = want
		cpo.RepoURL = src.Repo
		if cpo.RepoURL == "" {
			cpo.RepoURL = defRepo
		}
	}
	ip := action.NewInstall(h.Config)
	ip.ChartPathOptions = cpo
	ip.SetRegistryClient(h.Config.RegistryClient)
	if src.PlainHTTP {
		rc, err := registry.NewClient(registry.ClientOptCredentialsFile(h.Settings.RegistryConfig), registry.ClientOptWriter(io.Discard), registry.ClientOptPlainHTTP())
		if err != nil {
			return nil, cliexit.Usagef("cannot set up the OCI registry client: %w", err)
		}
		ip.SetRegistryClient(rc)
	}
	path, err := ip.ChartPathOptions.LocateChart(name, h.Settings)
	if err != nil {
		where := name
		if cpo.RepoURL != "" {
			where = fmt.Sprintf("%s from %s", name, cpo.RepoURL)
		}
		if cpo.Version != "" {
			where += " version " + cpo.Version
		}
		return nil, cliexit.Usagef("cannot find chart %s: %s: check --chart, --repo and --version", where, cliexit.OneLine(err.Error()))
	}
	c, err := loader.Load(path)
	if err != nil {
		return nil, cliexit.Usagef("cannot load chart %s: %s", path, cliexit.OneLine(err.Error()))
	}
	if c.Metadata == nil || c.Metadata.Name != want {
		got := "?"
		if c.Metadata != nil {
			got = c.Metadata.Name
		}
		return nil, cliexit.Usagef("chart %s is %q, not the NVIDIA %s chart", path, got, want)
	}
	if src.VersionGiven && src.Version != "" && strings.TrimPrefix(c.Metadata.Version, "v") != strings.TrimPrefix(src.Version, "v") {
		return nil, cliexit.Usagef("chart %s is version %s, not %s: drop --version or give the chart of that version", path, c.Metadata.Version, src.Version)
	}
	return c, nil
}

// Current returns the release's last revision, or nil when there is none.
func (h *Helm) Current(name string) (*release.Release, error) {
	hist := action.NewHistory(h.Config)
	hist.Max = 1
	rels, err := hist.Run(name)
	if errors.Is(err, driver.ErrReleaseNotFound) || err == nil && len(rels) == 0 {
		return nil, nil
	}
	if err != nil {
		return nil, helmError("read the history of release "+name, err)
	}
	last := rels[0]
	for _, r := range rels {
		if r.Version > last.Version {
			last = r
		}
	}
	return last, nil
}

// InstallOrUpgrade installs the release when it does not exist and upgrades it otherwise
// (helm upgrade --install), with o's options as they are (Client.InstallChart decides a
// first install's atomicity). cur is the release's last revision as Current read it.
func (h *Helm) InstallOrUpgrade(ctx context.Context, c *chart.Chart, vals map[string]any, o InstallRequest, cur *release.Release) (*release.Release, error) {
	if cur != nil && cur.Chart != nil && cur.Chart.Metadata != nil && cur.Chart.Metadata.Name != c.Metadata.Name {
		return nil, cliexit.Usagef("release %q in namespace %s is chart %q, not %s: choose another --release-name or remove it", o.ReleaseName, h.Namespace, cur.Chart.Metadata.Name, c.Metadata.Name)
	}
	if cur == nil || cur.Info != nil && cur.Info.Status == release.StatusUninstalled {
		in := action.NewInstall(h.Config)
		in.ReleaseName, in.Namespace = o.ReleaseName, h.Namespace
		in.Wait, in.Timeout, in.Atomic = o.Wait, o.Timeout, o.Atomic
		in.DryRun = o.DryRun
		if o.DryRun {
			// Render against the server's version without touching it: a first install's
			// custom resources cannot be mapped before its CRDs exist.
			in.DryRunOption, in.ClientOnly = "client", true
			if kv, err := h.kubeVersion(); err == nil {
				in.KubeVersion = kv
			}
			// The API versions the server serves, as 'helm template --api-versions' would be
			// told: the chart checks them (its GPUCluster stack needs resource.k8s.io).
			if vs, err := h.apiVersions(); err == nil {
				in.APIVersions = vs
			}
		}
		in.Replace = cur != nil
		rel, err := in.RunWithContext(ctx, c, vals)
		if err != nil {
			return nil, helmError(fmt.Sprintf("install %s %s into namespace %s", c.Metadata.Name, c.Metadata.Version, h.Namespace), err)
		}
		return rel, nil
	}
	up := action.NewUpgrade(h.Config)
	up.Namespace = h.Namespace
	up.Wait, up.Timeout, up.Atomic = o.Wait, o.Timeout, o.Atomic
	up.ReuseValues, up.ResetValues = o.ReuseValues, o.ResetValues
	up.DryRun = o.DryRun
	if o.DryRun {
		up.DryRunOption = "server"
	}
	rel, err := up.RunWithContext(ctx, o.ReleaseName, c, vals)
	if err != nil {
		return nil, helmError(fmt.Sprintf("upgrade %s to %s in namespace %s", o.ReleaseName, c.Metadata.Version, h.Namespace), err)
	}
	return rel, nil
}

func (h *Helm) apiVersions() (chartutil.VersionSet, error) {
	if h.Config.RESTClientGetter == nil {
		return nil, errors.New("no cluster to ask for its API versions")
	}
	dc, err := h.Config.RESTClientGetter.ToDiscoveryClient()
	if err != nil {
		return nil, err
	}
	return action.GetVersionSet(dc)
}

func (h *Helm) kubeVersion() (*chartutil.KubeVersion, error) {
	if h.Config.RESTClientGetter == nil {
		return nil, errors.New("no cluster to ask for its version")
	}
	dc, err := h.Config.RESTClientGetter.ToDiscoveryClient()
	if err != nil {
		return nil, err
	}
	v, err := dc.ServerVersion()
	if err != nil {
		return nil, err
	}
	return &chartutil.KubeVersion{Version: v.GitVersion, Major: v.Major, Minor: v.Minor}, nil
}

// Uninstall removes the release with the chart's hooks.
func (h *Helm) Uninstall(name string, timeout time.Duration) error {
	un := action.NewUninstall(h.Config)
	un.Timeout = timeout
	un.Wait = true
	if _, err := un.Run(name); err != nil {
		if errors.Is(err, driver.ErrReleaseNotFound) {
			return cliexit.Usagef("release %q not found in namespace %s: list releases with 'helm list -A'", name, h.Namespace)
		}
		return helmError("uninstall "+name, err)
	}
	return nil
}

func helmError(doing string, err error) error {
	msg := cliexit.OneLine(err.Error())
	code := cliexit.Failures
	switch {
	case apierrors.IsUnauthorized(err), strings.Contains(msg, "provide credentials"):
		code = cliexit.Usage
		msg += ": refresh the kubeconfig (expired token or certificate?)"
	case strings.Contains(msg, " is forbidden: "):
		// Helm wraps the API server's refusal in its own words; say it as the other
		// commands do, from the refusal on.
		i := strings.Index(msg, " is forbidden: ")
		detail := msg[strings.LastIndex(msg[:i], " ")+1:]
		return cliexit.Usagef("cannot %s: forbidden by RBAC (%s): ask a cluster admin for that permission", doing, detail)
	case strings.Contains(msg, "forbidden"), strings.Contains(msg, "Unauthorized"):
		code = cliexit.Usage
		msg += ": ask a cluster admin for the permission named"
	case strings.Contains(msg, "values don't meet the specifications of the schema"), strings.Contains(msg, "parse error"), strings.Contains(msg, "cannot re-use a name"):
		code = cliexit.Usage
	case strings.Contains(msg, "connection refused"), strings.Contains(msg, "no such host"):
		code = cliexit.Usage
		msg += ": check --context / KUBECONFIG"
	}
	return cliexit.WithCode(code, fmt.Errorf("cannot %s: %s", doing, msg))
}
