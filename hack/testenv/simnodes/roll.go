package simnodes

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/uuid"

	"github.com/kubectl-gpu/kubectl-gpu/common/hostconfig"
	"github.com/kubectl-gpu/kubectl-gpu/common/nodepod"
	rep "github.com/kubectl-gpu/kubectl-gpu/common/nodereport"
	"github.com/kubectl-gpu/kubectl-gpu/common/prep"
	"github.com/kubectl-gpu/kubectl-gpu/hack/testenv/localcluster"
)

// RollSim makes kwok nodes answer a `prep --apply --reboot` roll the way machines would
// (see SimulateRoll). Simulated, and labelled so: the node agent's reports (a nouveau
// blacklist to write, which needs a reboot, until a node has applied it) and the reboot
// (NotReady, then a new boot ID and Ready after RebootTime). Real: the API server, the
// Jobs and pods, the eviction API and the disruption controller, the drain.
type RollSim struct {
	c *localcluster.Cluster
	// RebootTime is how long a simulated reboot takes.
	RebootTime time.Duration

	mu       sync.Mutex
	applied  map[string]bool
	reboots  map[string]int
	pending  map[string]bool // reboots on their way
	failBoot map[string]bool // nodes whose check fails after the reboot
	noReturn map[string]bool // nodes that never come back
}

// SimulateRoll serves the prep pods' logs of the roll until ctx ends.
func SimulateRoll(ctx context.Context, c *localcluster.Cluster, rebootTime time.Duration) (*RollSim, error) {
	s := &RollSim{c: c, RebootTime: rebootTime, applied: map[string]bool{}, reboots: map[string]int{}, pending: map[string]bool{}, failBoot: map[string]bool{}, noReturn: map[string]bool{}}
	if err := nodepod.EnsureNamespace(ctx, c.Client, nodepod.DefaultNamespace, nodepod.PSAPrivileged); err != nil {
		return nil, err
	}
	err := c.ServePodLogs(ctx, nodepod.DefaultNamespace, nodepod.Selector(prep.Component), "agent", func(p *corev1.Pod) string {
		b, _ := json.Marshal(s.report(ctx, p))
		return string(b) + "\n"
	})
	return s, err
}

// Reboots is how many times node was rebooted.
func (s *RollSim) Reboots(node string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.reboots[node]
}

// FailAfterReboot makes node's check fail after a reboot (or not).
func (s *RollSim) FailAfterReboot(node string, fail bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.failBoot[node] = fail
}

// NeverReturn makes node stay down after its reboot (or not).
func (s *RollSim) NeverReturn(node string, never bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.noReturn[node] = never
}

// Reset forgets what every node applied (their plans need a reboot again).
func (s *RollSim) Reset() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.applied, s.reboots, s.pending = map[string]bool{}, map[string]int{}, map[string]bool{}
}

func (s *RollSim) report(ctx context.Context, p *corev1.Pod) *rep.Report {
	node := p.Spec.NodeName
	args := p.Spec.Containers[0].Args
	mode := rep.Mode(args[0])
	r := rep.New("sim", mode)
	r.Node, r.Arch, r.OS, r.Kernel, r.Flavour = node, "amd64", "simulated node (kubectl-gpu tests)", "6.1.0-sim", rep.FlavourKubeadm
	r.GPUs = []rep.GPU{{PCIAddress: "0000:07:00.0", DeviceID: "0x20b0", Name: "simulated A100"}}
	r.Add(rep.CheckPCI, rep.OK, "1 NVIDIA GPU on the PCI bus (simulated)", "")
	s.mu.Lock()
	defer s.mu.Unlock()
	blacklist := rep.Change{Check: rep.CheckNouveau, File: hostconfig.NouveauFile, Diff: "+blacklist nouveau\n"}
	reason := hostconfig.NouveauReboot(false, &rep.Change{Check: rep.CheckNouveau, Command: []string{"update-initramfs", "-u"}})
	switch mode {
	case rep.ModePlan:
		if !s.applied[node] {
			r.Changes, r.Reboot = []rep.Change{blacklist}, reason
		}
	case rep.ModeApply:
		if !s.applied[node] {
			blacklist.Done = true
			r.Changes, r.Reboot = []rep.Change{blacklist}, reason
			s.applied[node] = true
		}
	case rep.ModeReboot:
		want := ""
		for i := range args {
			if args[i] == "--boot-id" && i+1 < len(args) {
				want = args[i+1]
			}
		}
		n, err := s.c.Client.CoreV1().Nodes().Get(ctx, node, metav1.GetOptions{})
		c := rep.Change{Check: "reboot", Command: []string{"systemctl", "reboot"}}
		switch {
		case s.pending[node]:
			c.Done, c.Note = true, "a reboot was already asked for"
		case err == nil && n.Status.NodeInfo.BootID == want:
			c.Done, c.Note = true, "simulated reboot"
			s.reboots[node]++
			s.pending[node] = true
			go s.reboot(context.WithoutCancel(ctx), node, s.noReturn[node])
		default:
			c.Note = "not run: the host has booted since"
		}
		r.Changes = []rep.Change{c}
	case rep.ModeCheck:
		if s.failBoot[node] && s.reboots[node] > 0 {
			r.Add(rep.CheckDriver, rep.Fail, "no NVIDIA driver loaded after the reboot (simulated)", "")
		}
	}
	if !s.applied[node] {
		r.Add(rep.CheckNouveau, rep.Warn, "nouveau is not blacklisted (simulated)", "")
	}
	return r
}

// RebootDelay is how long after the agent's report the host goes down (the agent's
// systemd timer: --on-active=5).
const RebootDelay = 5 * time.Second

// reboot: the node goes NotReady (kwok then drops its addresses, as a node that stopped
// answering), then comes back with a new boot ID, its addresses and Ready.
func (s *RollSim) reboot(ctx context.Context, node string, never bool) {
	if never {
		reboot(ctx, s.c, node, RebootDelay, s.RebootTime, nil)
		return // pending for good: the reboot never ends
	}
	reboot(ctx, s.c, node, RebootDelay, s.RebootTime, func() (string, error) { return string(uuid.NewUUID()), nil })
	s.mu.Lock()
	s.pending[node] = false // only once the node is back with its new boot ID
	s.mu.Unlock()
}

// patchNodeStatus sets a node's Ready condition, and its boot ID and addresses when given,
// as its kubelet would.
func patchNodeStatus(ctx context.Context, c *localcluster.Cluster, node string, ready corev1.ConditionStatus, bootID string, addrs []corev1.NodeAddress) error {
	n, err := c.Client.CoreV1().Nodes().Get(ctx, node, metav1.GetOptions{})
	if err != nil {
		return err
	}
	now := metav1.Now()
	conds := []map[string]any{}
	for _, c := range n.Status.Conditions {
		if c.Type == corev1.NodeReady {
			conds = append(conds, map[string]any{"type": "Ready", "status": ready, "reason": "SimulatedReboot", "lastHeartbeatTime": now, "lastTransitionTime": now})
		}
	}
	status := map[string]any{"conditions": conds}
	if bootID != "" {
		status["nodeInfo"] = map[string]any{"bootID": bootID}
	}
	if addrs != nil {
		status["addresses"] = addrs
	}
	b, _ := json.Marshal(map[string]any{"status": status})
	_, err = c.Client.CoreV1().Nodes().PatchStatus(ctx, node, b)
	if err != nil {
		return fmt.Errorf("simulate the reboot of %s: %w", node, err)
	}
	return nil
}
