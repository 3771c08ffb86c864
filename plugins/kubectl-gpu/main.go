// Command kubectl-gpu is the `kubectl gpu` plugin (also `helm gpu`).
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
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
	go interrupts(sig, streams.ErrOut, func() { cancel(cliexit.ErrInterrupted) }, os.Exit)

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

// interrupts handles the signals: the first cancels the run, which cleans up (its pods
// deleted, its state on the nodes kept, the nodes it leaves cordoned named); the second
// aborts at once, saying what the cleanup may have left and how to go on.
func interrupts(sig <-chan os.Signal, w io.Writer, cancel func(), exit func(int)) {
	s := <-sig
	fmt.Fprintf(w, "\n%s: cleaning up (press Ctrl-C again to abort)\n", s)
	cancel()
	<-sig
	fmt.Fprintln(w, "aborted before the cleanup finished: the tool's pods may be left in its namespace, and nodes a roll cordoned stay cordoned (kubectl get nodes)")
	fmt.Fprintln(w, "run the same command again: it resumes each node where it stopped, uncordons the nodes it finishes and removes its pods")
	exit(cliexit.Interrupted)
}
