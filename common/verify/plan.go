package verify

import (
	"context"
	"errors"
	"fmt"
	"strings"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/kubectl-gpu/kubectl-gpu/common/cliexit"
	"github.com/kubectl-gpu/kubectl-gpu/common/cluster"
	"github.com/kubectl-gpu/kubectl-gpu/common/inventory"
)

// Plan is the pre-flight result: the nodes and the RuntimeClass, decided before anything
// is created.
type Plan struct {
	Targets      []target
	RuntimeClass string
}

// ErrNoGPUs is what Prepare's error is when a named node, or every node, advertises no GPUs:
// what a caller that has just installed or restarted the GPU software waits out.
var ErrNoGPUs = errors.New("no GPUs advertised")

// noGPUs marks an error as ErrNoGPUs; its message and exit code are the wrapped error's.
type noGPUs struct{ error }

func (noGPUs) Is(target error) bool { return target == ErrNoGPUs }
func (e noGPUs) Unwrap() error      { return e.error }

// Nodes are the nodes the run will verify.
func (p *Plan) Nodes() []string {
	out := make([]string, len(p.Targets))
	for i, t := range p.Targets {
		out[i] = t.node
	}
	return out
}

// Keep keeps the nodes keep says yes to (kubectl gpu up: the GPU nodes of its plan).
func (p *Plan) Keep(keep func(node string) bool) {
	out := p.Targets[:0]
	for _, t := range p.Targets {
		if keep(t.node) {
			out = append(out, t)
		}
	}
	p.Targets = out
}

// Prepare validates the config against the cluster with one node list and one
// RuntimeClass get, made at once. Every problem here is exit 2 and nothing has been
// created.
func Prepare(ctx context.Context, cs kubernetes.Interface, req *Request) (*Plan, error) {
	d := req.Default()
	cfg := &d
	rcc := make(chan runtimeClassResult, 1)
	go func() {
		rc, err := runtimeClass(ctx, cs, cfg.RuntimeClass)
		rcc <- runtimeClassResult{rc, err}
	}()
	chosen, err := inventory.ListAndChoose(ctx, cs, inventory.Options{Names: cfg.Names, Selector: cfg.Selector, All: true})
	if err != nil {
		return nil, err
	}
	// DRA is read only when it can matter: --claim dra, or a chosen node without the
	// device plugin's resource (a node whose GPUs DRA may publish).
	need := cfg.Claim == ClaimDRA
	for _, n := range chosen {
		if q := n.Status.Allocatable[cfg.Resource]; q.IsZero() && cfg.Claim != ClaimDevicePlugin {
			need = true
		}
	}
	dra := &inventory.DRAState{}
	if need {
		if dra, err = draState(ctx, cs, cfg); err != nil {
			return nil, err
		}
	}
	p := &Plan{}
	var tooFew []string
	for _, n := range chosen {
		alloc := n.Status.Allocatable[cfg.Resource]
		have, viaDRA := alloc.Value(), false
		if d := dra.Node(n.Name); d != nil && (cfg.Claim == ClaimDRA || cfg.Claim != ClaimDevicePlugin && have == 0) {
			have, viaDRA = draCount(d, cfg.Resource), true
		} else if cfg.Claim == ClaimDRA {
			have = 0
		}
		if have == 0 {
			if len(cfg.Names) > 0 {
				what := "no allocatable " + string(cfg.Resource)
				if cfg.Claim == ClaimDRA {
					what = "no GPU published through DRA (driver " + inventory.DRADriver + ")"
				}
				return nil, noGPUs{cliexit.Usagef("node %q has %s: run 'kubectl gpu nodes --all' to see what it has, or 'kubectl gpu prep %s'", n.Name, what, n.Name)}
			}
			continue
		}
		want := cfg.GPUs
		if want == 0 {
			want = have
		}
		if want > have {
			tooFew = append(tooFew, fmt.Sprintf("%s has %d", n.Name, have))
			continue
		}
		p.Targets = append(p.Targets, target{node: n.Name, gpus: want, pod: PodName(n.Name), dra: viaDRA, sharing: inventory.Sharing(n)})
	}
	if len(tooFew) > 0 {
		return nil, cliexit.Usagef("--gpus %d is more than the node has (%s %s): lower --gpus or use --gpus all", cfg.GPUs, strings.Join(tooFew, ", "), cfg.Resource)
	}
	if len(p.Targets) == 0 {
		what := "no GPU node found"
		if cfg.Selector != "" {
			what += fmt.Sprintf(" matching %q", cfg.Selector)
		}
		return nil, noGPUs{cliexit.Failuresf("%s (no node has allocatable %s): run 'kubectl gpu prep' to check the nodes and 'kubectl gpu operator install' to expose their GPUs", what, cfg.Resource)}
	}
	rc := <-rcc
	if rc.err != nil {
		return nil, rc.err
	}
	p.RuntimeClass = rc.name
	return p, nil
}

type runtimeClassResult struct {
	name string
	err  error
}

// runtimeClass is the RuntimeClass the pods use for --runtime-class rc: auto's nvidia when
// it exists, none, or the one named (which must exist).
func runtimeClass(ctx context.Context, cs kubernetes.Interface, rc string) (string, error) {
	switch rc {
	case RuntimeNone, "":
		return "", nil
	case RuntimeAuto:
		_, err := cs.NodeV1().RuntimeClasses().Get(ctx, NvidiaRuntime, metav1.GetOptions{})
		switch {
		case err == nil:
			return NvidiaRuntime, nil
		case apierrors.IsNotFound(err):
			return "", nil // CDI / NRI mode: the operator creates no RuntimeClass and none is needed.
		default:
			return "", cluster.APIError("get RuntimeClass nvidia", err)
		}
	}
	if _, err := cs.NodeV1().RuntimeClasses().Get(ctx, rc, metav1.GetOptions{}); err != nil {
		if apierrors.IsNotFound(err) {
			return "", cliexit.Usagef("RuntimeClass %q does not exist: list them with 'kubectl get runtimeclass', or use --runtime-class auto", rc)
		}
		return "", cluster.APIError("get RuntimeClass "+rc, err)
	}
	return rc, nil
}

// draState reads what DRA publishes, unless the pods must use the device plugin. Without
// the permission to list ResourceSlices, auto goes on with the device plugin alone (and
// says so); --claim dra stops.
func draState(ctx context.Context, cs kubernetes.Interface, req *Request) (*inventory.DRAState, error) {
	if req.Claim == ClaimDevicePlugin {
		return &inventory.DRAState{}, nil
	}
	st, err := inventory.CollectDRA(ctx, cs)
	var le *inventory.DRAListError
	switch {
	case errors.As(err, &le) && req.Claim == ClaimAuto && cluster.IsRBACDenied(le.Err):
		if req.Warn != nil {
			fmt.Fprintf(req.Warn, "warning: GPUs published through DRA are not considered: %v\n", le.APIError())
		}
		return &inventory.DRAState{}, nil
	case errors.As(err, &le):
		return nil, le.APIError()
	}
	return st, err
}

// draCount is how many devices of what resource names DRA publishes for a node: whole GPUs
// for nvidia.com/gpu, MIG devices for a nvidia.com/mig-* resource.
func draCount(d *inventory.DRA, res corev1.ResourceName) int64 {
	if strings.HasPrefix(string(res), inventory.MIGResourcePrefix) {
		return d.MIG
	}
	return d.GPUs
}
