package cluster

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"strings"
	"syscall"
	"testing"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/kubectl-gpu/kubectl-gpu/common/cliexit"
)

func TestAPIError(t *testing.T) {
	refused := &url.Error{Op: "Get", URL: "https://127.0.0.1:1/api", Err: &net.OpError{Op: "dial", Net: "tcp", Err: syscall.ECONNREFUSED}}
	tests := []struct {
		name string
		err  error
		code int
		want string
	}{
		{"forbidden", apierrors.NewForbidden(schema.GroupResource{Resource: "nodes"}, "", errors.New(`User "bob" cannot list resource "nodes"`)), cliexit.Usage, "cannot list nodes: forbidden by RBAC"},
		{"unauthorized", apierrors.NewUnauthorized("token expired"), cliexit.Usage, "did not accept the credentials"},
		{"refused", refused, cliexit.Usage, "the cluster is unreachable"},
		{"other", apierrors.NewInternalError(errors.New("boom")), cliexit.Failures, "cannot list nodes: Internal error"},
	}
	for _, tt := range tests {
		err := APIError("list nodes", tt.err)
		if cliexit.Code(err, false) != tt.code || !strings.Contains(err.Error(), tt.want) || strings.Contains(err.Error(), "\n") {
			t.Errorf("%s: %q (code %d), want code %d and %q on one line", tt.name, err, cliexit.Code(err, false), tt.code, tt.want)
		}
	}
	if APIError("x", nil) != nil {
		t.Error("nil stays nil")
	}
	// A request cut short by Ctrl-C is not an unreachable cluster: no usage code, the
	// cancellation kept in the chain.
	cut := &url.Error{Op: "Get", URL: "https://127.0.0.1:1/api", Err: context.Canceled}
	if err := APIError("list pods", cut); !errors.Is(err, context.Canceled) || strings.Contains(err.Error(), "unreachable") {
		t.Errorf("cancelled request: %v", err)
	}
	already := cliexit.Usagef("named")
	if APIError("x", already) != already {
		t.Error("an error with a code keeps it")
	}
}

func TestConfigError(t *testing.T) {
	if err := ConfigError(clientcmd.ErrEmptyConfig); !strings.Contains(err.Error(), "no cluster configured") || cliexit.Code(err, false) != cliexit.Usage {
		t.Fatalf("empty config: %v", err)
	}
	if err := ConfigError(fmt.Errorf(`context was not found for specified context: nope`)); !strings.Contains(err.Error(), "kubectl config get-contexts") {
		t.Fatalf("unknown context: %v", err)
	}
}
