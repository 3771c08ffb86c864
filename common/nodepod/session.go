package nodepod

import (
	"context"
	"fmt"
	"time"

	"k8s.io/client-go/kubernetes"

	"github.com/kubectl-gpu/kubectl-gpu/common/cliexit"
)

// Session is a run that is given its nodes one at a time while it runs (Do), for a caller
// whose nodes are ready at different moments — a roll, where each node's next step starts
// when its own last one ended. Its pod and event watches are opened once (Open) and shared
// by every node, where one Execute per node would open them for each. The Ctrl-C contract
// is Execute's: when the context given to Open ends, every Do waiting returns
// cliexit.ErrInterrupted, and Close deletes every object of the run before it returns.
type Session[R any] struct {
	e      *engine[R]
	cancel context.CancelFunc
	done   chan struct{} // closed when the loop and its clean-up are over
	err    error         // what a Do gets once the session is over
}

type added[R any] struct {
	node  string
	reply chan<- outcome[R]
}

type outcome[R any] struct {
	res Result[R]
	err error
}

// ErrSessionClosed is what Do returns after Close.
var ErrSessionClosed = fmt.Errorf("nodepod: the session is closed")

// Open starts a Session of w: the watches are open when it returns. r.Nodes and
// r.MaxInFlight are not used (the caller decides when a node starts); r.Timeout bounds each
// node from its Do (0: no bound); r.Keep leaves the objects in place.
func Open[R any](ctx context.Context, cs kubernetes.Interface, r Run, w Work[R]) (*Session[R], error) {
	r.MaxInFlight = 0
	e := &engine[R]{cs: cs, r: r, w: w, ns: r.Namespace, runID: r.RunID}
	if e.runID == "" {
		e.runID = NewRunID()
	}
	if err := e.init(); err != nil {
		return nil, err
	}
	runCtx, cancel := context.WithCancel(ctx)
	e.ctx, e.runCtx = ctx, runCtx
	e.deleter = NewDeleter(ctx, e.cs, e.ns, e.w.Job != nil, DeleteWindow, e.runID)
	if err := e.openWatches(ctx); err != nil {
		cancel()
		stop(&e.evWatch)
		stop(&e.podWatch)
		return nil, err
	}
	e.adds = make(chan added[R])
	e.closing = make(chan struct{})
	e.timeouts = make(chan int)
	e.creates = make(chan createResult)
	e.logs = make(chan logResult)
	e.createSem = make(chan struct{}, e.r.Creators)
	s := &Session[R]{e: e, cancel: cancel, done: make(chan struct{})}
	go s.run()
	return s, nil
}

// RunID is the label value of the session's objects.
func (s *Session[R]) RunID() string { return s.e.runID }

// Do runs the Work on node and returns its result, once the node has one (a node whose
// time is up has the Work's TimedOut). A node runs at most once in a session. It returns an
// error instead when the session ended first: cliexit.ErrInterrupted when its context
// ended, the error that ended it (a refusal every node would meet), ErrSessionClosed.
func (s *Session[R]) Do(node string) (Result[R], error) {
	reply := make(chan outcome[R], 1)
	select {
	case s.e.adds <- added[R]{node: node, reply: reply}:
	case <-s.done:
		return Result[R]{}, s.err
	}
	o := <-reply // the loop answers every node it was given, also when it ends first
	return o.res, o.err
}

// Close ends the session: nodes still running get ErrSessionClosed, and every object of
// the run is deleted (unless Keep) before it returns. It may be called more than once.
func (s *Session[R]) Close() {
	select {
	case s.e.closing <- struct{}{}:
	case <-s.done:
	}
	<-s.done
}

func (s *Session[R]) run() {
	e := s.e
	defer close(s.done)
	e.loop()
	switch {
	case e.fatal != nil:
		s.err = e.fatal
	case e.ctx.Err() != nil:
		s.err = cliexit.ErrInterrupted
	default:
		s.err = ErrSessionClosed
	}
	for _, n := range e.nodes {
		if !n.done {
			if n.timer != nil {
				n.timer.Stop()
			}
			n.reply <- outcome[R]{err: s.err}
		}
	}
	close(e.quit)
	s.cancel()
	e.creating.Wait()
	e.deleter.Flush()
	stop(&e.evWatch)
	stop(&e.podWatch)
	if !e.r.Keep {
		e.deleteRun(context.WithoutCancel(e.ctx), e.cutShort.Load())
	}
}

// added: a node was given to the session; its object is created at once.
func (e *engine[R]) added(a added[R]) {
	if _, dup := e.byLabel[LabelValue(a.node)]; dup {
		a.reply <- outcome[R]{err: fmt.Errorf("nodepod: node %s already ran in this session", a.node)}
		return
	}
	s := e.add(a.node)
	s.reply = a.reply
	if e.r.Timeout > 0 {
		i := s.i
		s.timer = time.AfterFunc(e.r.Timeout, func() {
			select {
			case e.timeouts <- i:
			case <-e.quit:
			}
		})
	}
	e.creating.Add(1)
	go func() {
		defer e.creating.Done()
		select {
		case e.createSem <- struct{}{}:
		case <-e.runCtx.Done():
			return
		}
		defer func() { <-e.createSem }()
		uid, err := e.createObject(e.runCtx, s)
		if e.runCtx.Err() != nil {
			e.cutShort.Store(true)
		}
		select {
		case e.creates <- createResult{i: s.i, uid: uid, err: err}:
		case <-e.quit:
		}
	}()
}
