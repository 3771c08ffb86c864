package nodepod

import (
	"context"
	"errors"
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/client-go/kubernetes"

	"github.com/kubectl-gpu/kubectl-gpu/common/cluster"
)

// ErrLogRefused marks a log read the API server refused (RBAC, credentials): every pod of
// the run would meet it alike, so the run stops with it.
var ErrLogRefused = errors.New("log read refused")

// logBadRequestTries is how many times a log read the kubelet could not serve is tried.
const logBadRequestTries = 4

// ReadLog reads a container's log, retrying transient errors for up to 30 s (it runs on
// after ctx is cancelled, so a pod that finished is still read during clean-up). A refusal
// comes back as one line naming the permission (get pods/log), wrapping ErrLogRefused.
func ReadLog(ctx context.Context, cs kubernetes.Interface, ns, pod string, opts *corev1.PodLogOptions) ([]byte, error) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
	defer cancel()
	var b []byte
	var err error
	for try := 1; ; try++ {
		err = Retry(ctx, func(ctx context.Context) error {
			var err error
			b, err = cs.CoreV1().Pods(ns).GetLogs(pod, opts).DoRaw(ctx)
			return err
		})
		// The API server answers 400 when the node's kubelet did not give it the log (a
		// kubelet that has not caught up with a container that just ended): asked again a
		// few times, a second apart, before it counts.
		if !apierrors.IsBadRequest(err) || try == logBadRequestTries || ctx.Err() != nil {
			break
		}
		select {
		case <-ctx.Done():
		case <-time.After(time.Second):
		}
	}
	if apierrors.IsForbidden(err) || apierrors.IsUnauthorized(err) {
		return nil, refused{cluster.APIError(fmt.Sprintf("read the log of pod %s (get pods/log in namespace %s)", pod, ns), err)}
	}
	return b, err
}

// refused is the API error (its message and exit code) marked as ErrLogRefused.
type refused struct{ error }

func (r refused) Unwrap() error      { return r.error }
func (refused) Is(target error) bool { return target == ErrLogRefused }
