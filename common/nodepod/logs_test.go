package nodepod

import (
	"context"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
)

// TestReadLogAsksAgainAfterABadRequest: the API server's 400 for a log its node's kubelet
// did not serve (as kwok's and a kubelet catching up answer) is asked again a second later,
// up to logBadRequestTries times; then it counts.
func TestReadLogAsksAgainAfterABadRequest(t *testing.T) {
	for _, tc := range []struct {
		failures int32
		want     string
		requests int32
	}{{2, "the log\n", 3}, {100, "", logBadRequestTries}} {
		var n atomic.Int32
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Path != "/api/v1/namespaces/ns/pods/p/log" {
				http.NotFound(w, r)
				return
			}
			if n.Add(1) <= tc.failures {
				w.WriteHeader(http.StatusBadRequest)
				_, _ = w.Write([]byte("the server rejected our request"))
				return
			}
			_, _ = w.Write([]byte("the log\n"))
		}))
		cs, err := kubernetes.NewForConfig(&rest.Config{Host: srv.URL})
		if err != nil {
			t.Fatal(err)
		}
		b, err := ReadLog(context.Background(), cs, "ns", "p", &corev1.PodLogOptions{})
		srv.Close()
		if tc.want != "" && string(b) != tc.want || n.Load() != tc.requests || (tc.want == "") != apierrors.IsBadRequest(err) {
			t.Errorf("%d failures: %q, %v after %d requests; want %q after %d", tc.failures, b, err, n.Load(), tc.want, tc.requests)
		}
	}
}
