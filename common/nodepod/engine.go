package nodepod

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"time"

	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/rand"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes"

	"github.com/kubectl-gpu/kubectl-gpu/common/cliexit"
)

// Step is what a classification decided about a node's pod.
type Step int

// Steps.
const (
	// Wait: nothing decided yet; the engine calls again on the next change.
	Wait Step = iota
	// NeedLog: the pod finished; the engine reads its log and calls again with it.
	NeedLog
	// Done: the node's result is final.
	Done
)

// Observation is what the engine knows of one node's pod when it asks a Work to classify
// it.
type Observation struct {
	Node string
	// Pod is the node's pod as last seen (nil before it was seen). For a Job, the pod the
	// Job controller made.
	Pod *corev1.Pod
	// Deleted tells that the pod was deleted by someone else before the node finished.
	Deleted bool
	// Events are the Warning events about the node's object and its pod, of this run only
	// (an earlier run's pod of the same name has another UID), oldest first.
	Events []corev1.Event
	// Log is the pod's log, set (with LogRead) after a NeedLog step; LogErr when the read
	// failed for another reason than a refusal (a refusal ends the run).
	Log     []byte
	LogRead bool
	LogErr  error
}

// Work is what one command runs on its nodes: the object to create per node and how to
// read it. The engine does the rest (creation, watches, logs, deletion, interruption).
type Work[R any] struct {
	// Component labels the run's objects (app.kubernetes.io/component).
	Component string
	// Pod or Job builds the node's object, with labels that must be set on it (and on a
	// Job's pod template). Exactly one of them is set.
	Pod func(node string, labels map[string]string) *corev1.Pod
	Job func(node string, labels map[string]string) *batchv1.Job
	// Name is the node's object name in a run.
	Name func(node, runID string) string
	// EventSelector is the field selector of the events to watch in the namespace (Warning
	// events about the run's objects and pods are kept).
	EventSelector string
	// LogOptions for the log read of a NeedLog step.
	LogOptions *corev1.PodLogOptions
	// Classify decides about a node from what is known of it.
	Classify func(o Observation) (R, Step)
	// CreateFailed is the node's result when its object cannot be created. A non-nil error
	// ends the run with it (a refusal every node would meet alike).
	CreateFailed func(node string, err error) (R, error)
	// TimedOut is the node's result when the run's timeout passes before it finished.
	TimedOut func(o Observation) R
	// Finished, when set, is called from the run's own goroutine as each node finishes
	// (not for the nodes that time out), while slower nodes are still running.
	Finished func(r Result[R], done, total int)
	// Started, when set, is called from the run's own goroutine when a node's object has
	// been created.
	Started func(node string)
}

// Run is one run of a Work over nodes.
type Run struct {
	// RunID labels the run's objects (default: a random one).
	RunID     string
	Namespace string
	Nodes     []string
	// MaxInFlight bounds how many nodes have an unfinished object at once (0: no bound):
	// a freed slot starts the next node.
	MaxInFlight int
	// Creators bounds concurrent create requests (default 10).
	Creators int
	Timeout  time.Duration
	// Keep leaves the objects in place (for debugging); otherwise each is deleted once its
	// node finished (with those of the nodes that finish within DeleteWindow, in one
	// request) and every object of the run at the end, whatever happens.
	Keep bool
	// KeepFinished leaves a finished node's object in place (its log readable) for the
	// caller to delete (a Deleter of several runs: a roll's steps of one node in one
	// request); the run's end still deletes every object left.
	KeepFinished bool
}

// DeleteWindow is how long a run waits, after a node finished, for more nodes to finish
// before it deletes their objects in one request.
const DeleteWindow = 250 * time.Millisecond

// Result is one node's outcome.
type Result[R any] struct {
	Node    string
	Value   R
	Started time.Time // when its object was created (zero: never)
	Ended   time.Time
}

// Duration is how long the node took from its object's creation.
func (r Result[R]) Duration() time.Duration {
	if r.Started.IsZero() {
		return 0
	}
	return r.Ended.Sub(r.Started)
}

// The Ctrl-C contract of every command that runs pods on nodes: a run whose context is
// cancelled before every node has a result returns cliexit.ErrInterrupted (exit 130, no
// report); once every node has a result the run returns them, even when the signal arrives
// during the clean-up that follows. The run's objects are deleted in both cases before Execute
// returns (unless Keep).

// NewRunID returns a new run ID (lower-case letters and digits, a label value).
func NewRunID() string { return rand.String(8) }

// Execute runs w on every node of r and returns one result per node, in r.Nodes' order.
func Execute[R any](ctx context.Context, cs kubernetes.Interface, r Run, w Work[R]) ([]Result[R], error) {
	e := &engine[R]{cs: cs, r: r, w: w, ns: r.Namespace, runID: r.RunID}
	if e.runID == "" {
		e.runID = NewRunID()
	}
	return e.execute(ctx)
}

type nodeState[R any] struct {
	i        int
	node     string
	name     string // the object's name
	objUID   string
	pod      *corev1.Pod
	deleted  bool
	events   []corev1.Event
	started  time.Time
	ended    time.Time
	value    R
	done     bool
	logging  bool
	created  bool // the object exists (its deletion is owed)
	inFlight bool // holds an in-flight slot
	reply    chan<- outcome[R]
	timer    *time.Timer
}

// engine is one Execute: the nodes' states and the run's loop. The loop's goroutine owns
// every field below the nodes; each kind of news has its method: a creation returned
// (created), a pod changed (podChanged), a Warning event (eventSeen), a log was read
// (logRead).
type engine[R any] struct {
	cs    kubernetes.Interface
	r     Run
	w     Work[R]
	ns    string
	runID string

	nodes    []*nodeState[R]
	byName   map[string]*nodeState[R] // object name and pod names
	byLabel  map[string]*nodeState[R] // node label value
	finished int

	ctx      context.Context // the caller's: clean-up and log reads outlive the run's timeout
	runCtx   context.Context // the run's, with its timeout
	podWatch watch.Interface
	evWatch  watch.Interface
	creates  chan createResult
	slots    chan struct{} // a finished node's in-flight slot, for the creator
	logs     chan logResult
	deleter  *Deleter
	fatal    error         // ends the run
	quit     chan struct{} // closed when the loop is over: senders stop waiting for it

	// A Session's: the nodes it is given, its closing, a node's time up.
	adds      chan added[R]
	closing   chan struct{}
	closed    bool
	timeouts  chan int
	createSem chan struct{}
	creating  sync.WaitGroup
	cutShort  atomic.Bool
}

type createResult struct {
	i   int
	uid string
	err error
}

type logResult struct {
	i   int
	log []byte
	err error
}

func (e *engine[R]) kind() string {
	if e.w.Job != nil {
		return "Job"
	}
	return "pod"
}

func (e *engine[R]) init() error {
	if (e.w.Pod == nil) == (e.w.Job == nil) {
		return errors.New("nodepod: a Work builds either pods or Jobs")
	}
	if e.r.Creators <= 0 {
		e.r.Creators = 10
	}
	e.byName = map[string]*nodeState[R]{}
	e.byLabel = map[string]*nodeState[R]{}
	e.quit = make(chan struct{})
	return nil
}

// add makes a node's state.
func (e *engine[R]) add(node string) *nodeState[R] {
	s := &nodeState[R]{i: len(e.nodes), node: node, name: e.w.Name(node, e.runID)}
	e.nodes = append(e.nodes, s)
	e.byName[s.name] = s
	e.byLabel[LabelValue(node)] = s
	return s
}

// over tells whether the loop has nothing more to do: every node of an Execute has its
// result, a Session was closed.
func (e *engine[R]) over() bool {
	if e.adds != nil {
		return e.closed
	}
	return e.finished == len(e.nodes)
}

// loop handles the run's news until it is over, fails, or its context ends.
func (e *engine[R]) loop() {
	for !e.over() && e.fatal == nil && e.runCtx.Err() == nil {
		select {
		case a := <-e.adds:
			e.added(a)
		case <-e.closing:
			e.closed = true
		case i := <-e.timeouts:
			if s := e.nodes[i]; !s.done {
				e.end(s, e.w.TimedOut(e.observe(s)), false)
			}
		case c := <-e.creates:
			e.created(c)
		case ev, ok := <-e.podWatch.ResultChan():
			if !ok {
				e.podWatch = e.rewatch(e.openPods, "watch pods")
				continue
			}
			e.podChanged(ev)
		case ev, ok := <-e.evWatch.ResultChan():
			if !ok {
				e.evWatch = e.rewatch(e.openEvents, "watch events")
				continue
			}
			e.eventSeen(ev)
		case lr := <-e.logs:
			e.logRead(lr)
		case <-e.runCtx.Done():
		}
	}
}

func (e *engine[R]) execute(ctx context.Context) ([]Result[R], error) {
	if err := e.init(); err != nil {
		return nil, err
	}
	for _, n := range e.r.Nodes {
		e.add(n)
	}
	runCtx, cancel := context.WithTimeout(ctx, e.r.Timeout)
	defer cancel()
	e.ctx, e.runCtx = ctx, runCtx
	e.deleter = NewDeleter(ctx, e.cs, e.ns, e.w.Job != nil, DeleteWindow, e.runID)
	err := e.openWatches(ctx)
	defer stop(&e.evWatch)
	defer stop(&e.podWatch)
	if err != nil {
		return nil, err
	}

	// Clean-up, whatever happens: the creator is stopped and waited for, the finished
	// nodes' objects still to delete are deleted, and the run's label finds the rest
	// (a creation cut short by Ctrl-C may still have happened on the server).
	creates := make(chan createResult, len(e.nodes))
	e.slots = make(chan struct{}, len(e.nodes)+1)
	e.logs = make(chan logResult, len(e.nodes))
	creatorDone := make(chan bool, 1)
	go e.create(runCtx, creates, e.slots, creatorDone)
	defer func() {
		cancel()
		cutShort := <-creatorDone
		close(e.quit)
		e.deleter.Flush()
		if !e.r.Keep {
			e.deleteRun(context.WithoutCancel(ctx), cutShort)
		}
	}()

	e.creates = creates
	e.loop()
	if e.finished < len(e.nodes) && ctx.Err() != nil {
		return nil, cliexit.ErrInterrupted
	}
	if e.fatal != nil {
		return nil, e.fatal
	}
	out := make([]Result[R], len(e.nodes))
	for i, s := range e.nodes {
		if !s.done {
			e.end(s, e.w.TimedOut(e.observe(s)), false)
		}
		out[i] = Result[R]{Node: s.node, Value: s.value, Started: s.started, Ended: s.ended}
	}
	return out, nil
}

// created: a node's create request returned.
func (e *engine[R]) created(c createResult) {
	s := e.nodes[c.i]
	if c.err != nil {
		if e.runCtx.Err() != nil {
			return
		}
		v, ferr := e.w.CreateFailed(s.node, c.err)
		s.inFlight = e.r.MaxInFlight > 0 // its slot is free again
		e.finish(s, v)
		e.fatal = ferr
		return
	}
	s.created, s.inFlight, s.objUID = true, e.r.MaxInFlight > 0, c.uid
	if s.started.IsZero() {
		s.started = time.Now()
	}
	if e.w.Started != nil {
		e.w.Started(s.node)
	}
	if s.done { // finished (from an event) before its creation returned
		e.owed(s)
	}
	e.evaluate(s)
}

// podChanged: one of the run's pods was added, changed or deleted.
func (e *engine[R]) podChanged(ev watch.Event) {
	p, isPod := ev.Object.(*corev1.Pod)
	if !isPod {
		return
	}
	s := e.podNode(p)
	if s == nil || s.done {
		return
	}
	e.byName[p.Name] = s
	if ev.Type == watch.Deleted {
		s.pod, s.deleted = nil, true
	} else {
		s.pod, s.deleted = p, false
		if s.started.IsZero() {
			s.started = p.CreationTimestamp.Time
		}
	}
	e.evaluate(s)
}

// eventSeen: an event of the namespace; Warnings about a node's object or pod are kept.
func (e *engine[R]) eventSeen(ev watch.Event) {
	ce, isEvent := ev.Object.(*corev1.Event)
	if !isEvent || ce.Type != corev1.EventTypeWarning {
		return
	}
	if s := e.byName[ce.InvolvedObject.Name]; s != nil && !s.done {
		s.events = append(s.events, *ce)
		e.evaluate(s)
	}
}

// logRead: a finished pod's log was read (or could not be).
func (e *engine[R]) logRead(lr logResult) {
	s := e.nodes[lr.i]
	s.logging = false
	if errors.Is(lr.err, ErrLogRefused) {
		e.fatal = lr.err // the same for every pod: stop with the permission named
		return
	}
	o := e.observe(s)
	o.Log, o.LogRead, o.LogErr = lr.log, true, lr.err
	v, _ := e.w.Classify(o)
	e.finish(s, v)
}

// evaluate asks the Work about a node that changed: done, wait, or read its log first.
func (e *engine[R]) evaluate(s *nodeState[R]) {
	if s.done || s.logging || (s.pod == nil && !s.deleted && len(s.events) == 0) {
		return
	}
	v, step := e.w.Classify(e.observe(s))
	switch step {
	case Done:
		e.finish(s, v)
	case NeedLog:
		s.logging = true
		go func(i int, pod string) {
			b, err := ReadLog(e.ctx, e.cs, e.ns, pod, e.w.LogOptions)
			select {
			case e.logs <- logResult{i: i, log: b, err: err}:
			case <-e.quit:
			}
		}(s.i, s.pod.Name)
	}
}

// finish gives a node its result, frees what it held and tells the Work.
func (e *engine[R]) finish(s *nodeState[R], v R) { e.end(s, v, true) }

// end gives a node its result and frees what it held; tell: the Work's Finished is called
// (not for a node whose time is up).
func (e *engine[R]) end(s *nodeState[R], v R, tell bool) {
	if s.done {
		return
	}
	s.done, s.value, s.ended = true, v, time.Now()
	e.finished++
	e.owed(s)
	res := Result[R]{Node: s.node, Value: v, Started: s.started, Ended: s.ended}
	if e.w.Finished != nil && tell {
		e.w.Finished(res, e.finished, len(e.nodes))
	}
	if s.timer != nil {
		s.timer.Stop()
	}
	if s.reply != nil {
		s.reply <- outcome[R]{res: res}
	}
}

// owed frees a finished node's in-flight slot and deletes its object (unless Keep).
func (e *engine[R]) owed(s *nodeState[R]) {
	if s.inFlight {
		s.inFlight = false
		e.slots <- struct{}{}
	}
	if s.created && !e.r.Keep && !e.r.KeepFinished {
		s.created = false
		e.deleter.Add(s.node, s.name)
	}
}

// podNode finds the node state of one of the run's pods: by name (a pod the engine
// creates) or by the node label (a Job's pod).
func (e *engine[R]) podNode(p *corev1.Pod) *nodeState[R] {
	if p.Labels[LabelRun] != e.runID {
		return nil // another run's pod (the watch selects by run; a pod of the same name may linger)
	}
	if s := e.byName[p.Name]; s != nil {
		return s
	}
	return e.byLabel[p.Labels[LabelNode]]
}

// observe is what is known of a node: events only of this run's object and pod.
func (e *engine[R]) observe(s *nodeState[R]) Observation {
	o := Observation{Node: s.node, Pod: s.pod, Deleted: s.deleted}
	uids := map[string]bool{}
	if s.objUID != "" {
		uids[s.objUID] = true
	}
	if s.pod != nil {
		uids[string(s.pod.UID)] = true
	}
	for _, ev := range s.events {
		if uids[string(ev.InvolvedObject.UID)] {
			o.Events = append(o.Events, ev)
		}
	}
	return o
}
