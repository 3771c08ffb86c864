package prep

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/kubectl-gpu/kubectl-gpu/common/cliexit"
	"github.com/kubectl-gpu/kubectl-gpu/common/nodepod"
	rep "github.com/kubectl-gpu/kubectl-gpu/common/nodereport"
)

// nodeRoll is one node's roll: where it stands (st, written on the node), what this run
// reports of it (res), and one method per phase — cordon, drain, install, reboot, check —
// each of which does its step when the node's record says it is not done yet.
//
// Each step is written on the node before the next begins, in as few patches as keep a
// rerun exact: the cordon with the first state; the apply's report with the boot the reboot
// is for (a rerun that finds it asks that reboot, without applying again); the host's answer
// to the reboot (a rerun does not ask twice); the check's report with the uncordon. A drain or
// a reboot that finished is not written on its own: a rerun drains again (nothing is left to
// evict), and finds the node back with its new boot.
type nodeRoll struct {
	r    *roller
	name string
	st   RollState
	res  NodeRoll
	// annotations are the last agent report's, written with the next record.
	annotations map[string]any
	// ran: a Job of the roll ran on the node (release deletes them).
	ran bool
}

// errStopped is what a phase returns when it stopped the roll of its node (n.res says why).
var errStopped = errors.New("the node's roll stopped")

// node rolls one node: its phases in order, each skipped when the record says it is done.
func (r *roller) node(ctx context.Context, name string) NodeRoll {
	start := time.Now()
	n := &nodeRoll{r: r, name: name, res: NodeRoll{Node: name}}
	defer func() {
		if n.ran {
			r.release(name)
		}
	}()
	node := r.nodes.get(name)
	if node == nil {
		n.res.Error = "node " + name + " is not in the cluster"
		return n.done(start)
	}
	n.st = ReadRollState(node)
	if n.st.Unfinished() {
		n.res.ResumedFrom = n.st.Phase
		n.st.Error = ""
		if at := ResumeAfter(n.st, r.changed[name]); at != n.st.Phase {
			n.say("its plan has changes again: installed again for them")
			n.st = RollState{Phase: at, WasCordoned: n.st.WasCordoned}
		}
	} else {
		n.st = RollState{WasCordoned: node.Spec.Unschedulable}
	}
	for _, phase := range []func(context.Context) error{n.cordon, n.drain, n.install, n.reboot, n.check} {
		if err := phase(ctx); err != nil {
			break
		}
	}
	return n.done(start)
}

func (n *nodeRoll) done(start time.Time) NodeRoll {
	n.res.Duration = time.Since(start).Round(time.Second).String()
	return n.res
}

func (n *nodeRoll) before(p Phase) bool { return phaseIndex(n.st.Phase) < phaseIndex(p) }

func (n *nodeRoll) say(what string)           { n.r.prog.Node(n.name + ": " + what) }
func (n *nodeRoll) wait(state, detail string) { n.r.prog.Status(n.name, state, detail) }

// fail stops the node's roll with msg (recorded on the node) and hint; after a Ctrl-C it
// records only that this run was interrupted.
func (n *nodeRoll) fail(ctx context.Context, msg, hint string) error {
	if ctx.Err() != nil {
		n.res.Error = "interrupted"
		if n.res.ResumedFrom != "" && n.st.Phase != "" {
			// The node's record still says why an earlier run stopped: it says this run's
			// reason now, so the next plan quotes no other run's error.
			n.st.Error = "interrupted (Ctrl-C or a timeout) at " + string(n.st.Phase)
			_ = n.r.record(ctx, n.name, &n.st, n.annotations, nil)
		}
		return errStopped
	}
	n.st.Error = msg
	_ = n.r.record(ctx, n.name, &n.st, n.annotations, nil)
	n.res.Phase, n.res.Error = n.st.Phase, msg
	n.res.Hint = resumeHint(hint, n.st.Phase)
	n.say("failed: " + msg)
	return errStopped
}

// next records the phase (with the last report's annotations and spec, a cordon or an
// uncordon) on the node.
func (n *nodeRoll) next(ctx context.Context, phase Phase, spec map[string]any) error {
	n.st.Phase, n.res.Phase = phase, phase
	n.say(string(phase))
	err := n.r.record(ctx, n.name, &n.st, n.annotations, spec)
	n.annotations = nil
	return err
}

// reached is a step finished but not written: a failure after it says it.
func (n *nodeRoll) reached(phase Phase) {
	n.st.Phase, n.res.Phase = phase, phase
	n.say(string(phase))
}

// run runs the agent on the node in mode, through the roll's session of that mode.
func (n *nodeRoll) run(s *nodepod.Session[NodeResult], mode rep.Mode) (NodeResult, error) {
	n.ran = true
	out, err := s.Do(n.name)
	if err != nil {
		return NodeResult{}, err
	}
	nr := out.Value
	nr.Node = n.name
	if nr.Report != nil && mode != rep.ModeReboot {
		n.annotations = Annotations(nr.Report, time.Now())
	}
	if nr.Error != "" {
		return nr, fmt.Errorf("%s: %s", mode, nr.Error)
	}
	return nr, nil
}

// cordon: the cordon and the state are one patch, so a crash cannot leave a cordon the roll
// does not know it made.
func (n *nodeRoll) cordon(ctx context.Context) error {
	if !n.before(PhaseCordoned) {
		return nil
	}
	if err := n.next(ctx, PhaseCordoned, map[string]any{"unschedulable": true}); err != nil {
		return n.fail(ctx, err.Error(), "check your permission to patch nodes")
	}
	return nil
}

// drain evicts the node's pods by kubectl drain's rules; a budget that blocks it is named.
func (n *nodeRoll) drain(ctx context.Context) error {
	if !n.before(PhaseDrained) {
		return nil
	}
	evicted, err := n.r.drain(ctx, n.name, n.wait)
	n.res.Evicted = evicted
	var de *DrainError
	if errors.As(err, &de) {
		n.res.BlockedBy = de.Budgets
		return n.fail(ctx, "drain: "+de.Error(), de.Hint())
	}
	if err != nil {
		return n.fail(ctx, "drain: "+cliexit.OneLine(err.Error()), "")
	}
	n.reached(PhaseDrained)
	return nil
}

// install applies the node's changes (packages, files) with the agent; installed, and the
// reboot is for this boot: one record.
func (n *nodeRoll) install(ctx context.Context) error {
	if !n.before(PhaseInstalled) {
		return nil
	}
	n.wait("applying the changes", "")
	nr, err := n.run(n.r.apply, rep.ModeApply)
	if err != nil {
		return n.fail(ctx, err.Error(), nr.Hint)
	}
	if nr.Report != nil && nr.Report.Reboot != "" {
		n.st.Reason = nr.Report.Reboot
	}
	n.st.Driver, n.st.DriverWas = installedDriver(nr.Report)
	n.reached(PhaseInstalled)
	n.st.BootID, n.st.Requested = n.r.bootID(n.name), false
	if err := n.next(ctx, PhaseRebooting, nil); err != nil {
		return n.fail(ctx, err.Error(), "")
	}
	return nil
}

// reboot asks the host to reboot (unless a reboot it accepted is already on its way) and
// waits for the node to come back with a new boot ID and Ready. A node resumed while
// rebooting is waited for when its host accepted the reboot; otherwise it is asked (again):
// the agent reboots only the boot it is given, and a reboot already on its way is not asked
// twice.
func (n *nodeRoll) reboot(ctx context.Context) error {
	if !n.before(PhaseRebooted) {
		return nil
	}
	if n.st.Phase != PhaseRebooting || !n.st.Requested && n.r.bootID(n.name) == n.st.BootID {
		if n.st.Phase != PhaseRebooting {
			n.st.BootID, n.st.Requested = n.r.bootID(n.name), false
			if err := n.next(ctx, PhaseRebooting, nil); err != nil {
				return n.fail(ctx, err.Error(), "")
			}
		}
		n.wait("asking the host to reboot", "boot "+n.st.BootID)
		n.r.mu.Lock()
		n.r.bootIDs[n.name] = n.st.BootID
		n.r.mu.Unlock()
		nr, err := n.run(n.r.reboot, rep.ModeReboot)
		switch {
		case ctx.Err() != nil:
			return n.fail(ctx, "interrupted", "")
		case err != nil && nr.Report != nil:
			return n.fail(ctx, err.Error(), nr.Hint) // the agent said the host refused
		case err != nil:
			// No report: the host may be going down already (its log goes with it). The
			// wait below tells.
			n.say("no answer from the reboot pod (" + cliexit.OneLine(err.Error()) + "): waiting for the node to come back")
		}
		n.st.Requested = err == nil
		if err := n.r.record(ctx, n.name, &n.st, nil, nil); err != nil {
			return n.fail(ctx, err.Error(), "")
		}
	}
	boot, err := n.r.waitBoot(ctx, n.name, n.st.BootID, n.wait)
	if err != nil {
		return n.fail(ctx, err.Error(), "the node did not come back: look at its console; when it is back and Ready, run again")
	}
	n.res.BootID = boot
	n.reached(PhaseRebooted)
	return nil
}

// check runs prep's check on the node back from its reboot; ready, the node is uncordoned
// (unless it was cordoned before the roll) with the check's report, in one record.
func (n *nodeRoll) check(ctx context.Context) error {
	n.wait("checking after the reboot", "")
	nr, err := n.run(n.r.check, rep.ModeCheck)
	n.res.Check = &nr
	if err != nil {
		return n.fail(ctx, err.Error(), nr.Hint)
	}
	if !nr.Ready() {
		return n.fail(ctx, "back after the reboot, but not ready: "+failedChecks(nr.Report), "see its checks below (kubectl gpu prep "+n.name+")")
	}
	if msg, hint := n.driverNotLoaded(nr.Report); msg != "" {
		return n.fail(ctx, msg, hint)
	}
	if prove := n.r.o.Prove; prove != nil {
		n.wait("proving the node before it is uncordoned", "")
		if failure, hint := prove(ctx, n.name, n.wait); failure != "" || ctx.Err() != nil {
			n.res.Proof = failure
			return n.fail(ctx, "not proven after the reboot: "+failure, hint)
		}
		n.res.Proven = true
		n.say("proven")
	}
	var spec map[string]any
	if !n.st.WasCordoned {
		spec = map[string]any{"unschedulable": nil}
	}
	n.st.BootID, n.st.Reason, n.st.Requested = "", "", false
	if err := n.next(ctx, PhaseDone, spec); err != nil {
		return n.fail(ctx, err.Error(), "")
	}
	return nil
}

// installedDriver is the host driver version an apply report's done driver install put on
// the node, and the version loaded while it ran ("" when it installed no driver or its
// packages do not say the version).
func installedDriver(r *rep.Report) (driver, was string) {
	if r == nil {
		return "", ""
	}
	for _, ch := range r.Changes {
		if ch.Check != rep.CheckDriver || !ch.Done || ch.Error != "" {
			continue
		}
		if to := rep.DriverTarget(ch.Packages, ""); to != "" {
			return to, r.DriverVersion
		}
	}
	return "", ""
}

// driverNotLoaded: a node back from the reboot that was to load the driver the roll
// installed, with another driver loaded or none, failed — the new kernel module did not load
// (Secure Boot refusing it, a module built for another kernel), and verify would only say
// the GPUs are gone. It says how to go back to the driver the node ran.
func (n *nodeRoll) driverNotLoaded(r *rep.Report) (msg, hint string) {
	want := n.st.Driver
	if want == "" || r == nil || r.DriverVersion == want {
		return "", ""
	}
	loaded := "no NVIDIA driver"
	if r.DriverVersion != "" {
		loaded = "driver " + r.DriverVersion
	}
	msg = fmt.Sprintf("back after the reboot with %s loaded, not the installed %s: its kernel module did not load", loaded, want)
	hint = "the node's kernel log says why (journalctl -k -b | grep -i -e nvidia -e nvrm on the node): a module Secure Boot refuses, or one built for another kernel"
	if was := n.st.DriverWas; was != "" && was != want {
		hint += "; to go back to the driver it ran, the same command with --host-driver=" + was
	}
	return msg, hint
}
