// Command kubectl-gpu is the `kubectl gpu` plugin (also `helm gpu`).
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"k8s.io/cli-runtime/pkg/genericiooptions"

	// Client auth plugins (OIDC, exec credential plugins are built in) for kubeconfigs
	// that use them.
	_ "k8s.io/client-go/plugin/pkg/client/auth"

	"github.com/kubectl-gpu/kubectl-gpu/common/cliexit"
	"github.com/kubectl-gpu/kubectl-gpu/common/report"
	"github.com/kubectl-gpu/kubectl-gpu/plugins/root"
)

func main() {
	os.Exit(run())
}

func run() int {
	// Every line of the run on stderr — progress, warnings, the interrupt line — goes
	// through one writer, so a line never lands inside the live progress block.
	streams := genericiooptions.IOStreams{In: os.Stdin, Out: os.Stdout, ErrOut: report.NewStream(os.Stderr)}
	ctx, cancel := context.WithCancelCause(context.Background())
	defer cancel(nil)

	sig := make(chan os.Signal, 2)
	signal.Notify(sig, os.Interrupt, syscall.SIGTERM)
	go func() {
		s := <-sig
		fmt.Fprintf(streams.ErrOut, "\n%s: cleaning up (press Ctrl-C again to abort)\n", s)
		cancel(cliexit.ErrInterrupted)
		<-sig
		os.Exit(cliexit.Interrupted)
	}()

	cmd := root.NewCmdRoot(streams)
	cmd.SetArgs(root.HelmPluginArgs(os.Args[1:], os.Getenv))
	err := root.Execute(ctx, cmd)
	interrupted := errors.Is(context.Cause(ctx), cliexit.ErrInterrupted)
	code := cliexit.Code(err, interrupted)
	if err != nil && !cliexit.IsSilent(err) {
		msg := err.Error()
		if code == cliexit.Interrupted {
			msg = "interrupted"
		}
		fmt.Fprintf(streams.ErrOut, "error: %s\n", strings.TrimSpace(msg))
	}
	return code
}
