package localcluster

// A real node: kubelet + containerd + runc with a fake device plugin, each node a test host
// of its own (see ../../../shared/LOCAL-CLUSTER.md for what was measured):
//
//   - a network namespace joined to the machine by a veth pair with a /30 of 172.29.0.0/16
//     used on that pair only; the API server (on 127.0.0.1) is reached through a TCP relay on
//     the host side of the pair, pod traffic stays on a bridge inside the namespace;
//   - private PID and mount namespaces whose PID 1 is this package's init (realnode_init.go):
//     it remounts /proc, /sys and the cgroup hierarchies, hides the kubelet's and
//     containerd's fixed paths (/var/lib/kubelet, /run/containerd, …) behind directories of
//     the node, covers the machine-wide sysctls the kubelet would change with files that
//     already hold its values, and starts containerd, the device plugin and the kubelet;
//   - containerd with its own root and socket, an `nvidia` runtime whose binary is a wrapper
//     that logs and execs runc (standing in for nvidia-container-runtime, which is a runc
//     shim), images assembled in Go and imported with ctr.
//
// Teardown stops the init (its namespaces die with it), removes the node's cgroups, the
// network namespace with its veth pair and any mount point directory it had to create.

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"k8s.io/apimachinery/pkg/util/uuid"

	corev1 "k8s.io/api/core/v1"
	nodev1 "k8s.io/api/node/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/kubectl-gpu/kubectl-gpu/hack/release/ociimage"
)

// Images the real node always has (hack/testenv/nodeimages). The vectoradd stand-in is labelled as
// one in its name: it runs no CUDA code.
const (
	PauseImage          = "localhost/kubectl-gpu-test/pause:1"
	VectorAddStandIn    = "localhost/kubectl-gpu-test/cuda-vectoradd-standin"
	VectorAddStandInOK  = VectorAddStandIn + ":pass"
	VectorAddStandInBad = VectorAddStandIn + ":fail"
	VectorAddStandInZzz = VectorAddStandIn + ":sleep"
	// RuntimeClassNVIDIA is the RuntimeClass whose handler is the node's nvidia runtime.
	RuntimeClassNVIDIA = "nvidia"
)

// ErrRealNodeUnsupported wraps the reason this machine cannot run a real node.
var ErrRealNodeUnsupported = errors.New("this machine cannot run a real node")

// RealNodeOptions describe a real node.
type RealNodeOptions struct {
	Name string
	// GPUs is the number of nvidia.com/gpu devices the fake device plugin advertises.
	GPUs int
	// Labels are set by the kubelet when it registers the node.
	Labels map[string]string
	// Images are more images to import, by reference.
	Images map[string]ociimage.Spec
}

// RealNode is a running real node.
type RealNode struct {
	Name string
	// IP is the node's address (node side of the veth); HostIP the machine's side.
	IP, HostIP string
	Netns      string
	// Dir holds the node's files; RuntimeLog the nvidia runtime wrapper's log (one line
	// per call: its arguments).
	Dir, RuntimeLog string
	// ContainerdConfig is the config containerd runs with, seen by the node as
	// /etc/containerd/config.toml.
	ContainerdConfig string
	// CgroupRoot is the kubelet's cgroup root (one directory per hierarchy).
	CgroupRoot string
	// Socket is containerd's socket as the machine sees it.
	Socket string

	// initPID is the node's init (PID 1 of its PID namespace) as the machine sees it.
	initPID int
}

// StopDevicePlugin stops the node's fake device plugin, as an admin or a crash stopping
// NVIDIA's would (the kubelet then marks its GPUs unhealthy); StartDevicePlugin starts it
// again (it registers with the kubelet anew). The node's init does it (SIGUSR2, SIGHUP).
func (rn *RealNode) StopDevicePlugin() error { return syscall.Kill(rn.initPID, syscall.SIGUSR2) }

// StartDevicePlugin: see StopDevicePlugin.
func (rn *RealNode) StartDevicePlugin() error { return syscall.Kill(rn.initPID, syscall.SIGHUP) }

// RealNodeSupported says why this machine cannot run a real node, or nil.
func RealNodeSupported(opts Options) error {
	if opts.BinDir == "" {
		opts.BinDir = DefaultBinDir()
	}
	var missing []string
	if runtime.GOOS != "linux" {
		return fmt.Errorf("%w: not Linux", ErrRealNodeUnsupported)
	}
	if os.Geteuid() != 0 {
		return fmt.Errorf("%w: needs root (network, PID and mount namespaces)", ErrRealNodeUnsupported)
	}
	for _, b := range []string{"containerd", "containerd-shim-runc-v2", "runc", "ctr", "ip", "nsenter"} {
		if _, err := exec.LookPath(b); err != nil {
			missing = append(missing, b)
		}
	}
	if cniBinDir() == "" {
		missing = append(missing, "CNI plugins (bridge, host-local)")
	}
	if _, err := os.Stat(opts.bin("kubernetes", KubeVersion, "kubelet")); err != nil {
		missing = append(missing, "kubelet "+KubeVersion+" (make tools)")
	}
	if len(missing) > 0 {
		return fmt.Errorf("%w: missing %s (apt-get install containerd runc containernetworking-plugins iproute2 util-linux)", ErrRealNodeUnsupported, strings.Join(missing, ", "))
	}
	if fi, err := os.Stat("/sys/fs/cgroup/memory"); err != nil || !fi.IsDir() {
		return fmt.Errorf("%w: no cgroup v1 memory hierarchy at /sys/fs/cgroup/memory", ErrRealNodeUnsupported)
	}
	// A network namespace can be made (and is removed at once).
	name := "kgpu-probe-" + randID()
	noteNetnsMount()
	if out, err := exec.Command("ip", "netns", "add", name).CombinedOutput(); err != nil {
		return fmt.Errorf("%w: ip netns add: %v: %s", ErrRealNodeUnsupported, err, bytes.TrimSpace(out))
	}
	_ = exec.Command("ip", "netns", "del", name).Run()
	restoreNetnsMount()
	return nil
}

// netnsMount remembers whether /run/netns was a mount point (and existed) before this
// process first ran `ip netns add`: iproute2 makes it a shared bind mount of itself on first
// use and leaves it there, and the machine must be left as it was found.
var netnsMount struct {
	once          sync.Once
	wasMount, dir bool
}

func noteNetnsMount() {
	netnsMount.once.Do(func() {
		netnsMount.wasMount = isMountPoint("/run/netns")
		_, err := os.Stat("/run/netns")
		netnsMount.dir = err == nil
	})
}

// restoreNetnsMount undoes iproute2's /run/netns mount (and directory) when this process
// caused them and no network namespace is left in it.
func restoreNetnsMount() {
	if netnsMount.wasMount || !isMountPoint("/run/netns") {
		return
	}
	if ents, err := os.ReadDir("/run/netns"); err != nil || len(ents) > 0 {
		return
	}
	if err := syscall.Unmount("/run/netns", syscall.MNT_DETACH); err != nil {
		return
	}
	if !netnsMount.dir {
		_ = os.Remove("/run/netns")
	}
}

// isMountPoint tells whether path is a mount point of this mount namespace.
func isMountPoint(path string) bool {
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return false
	}
	for _, l := range strings.Split(string(b), "\n") {
		if f := strings.Fields(l); len(f) > 4 && f[4] == path {
			return true
		}
	}
	return false
}

func cniBinDir() string {
	for _, d := range []string{"/usr/lib/cni", "/opt/cni/bin"} {
		if _, err := os.Stat(filepath.Join(d, "bridge")); err == nil {
			if _, err := os.Stat(filepath.Join(d, "host-local")); err == nil {
				return d
			}
		}
	}
	return ""
}

func randID() string {
	const letters = "abcdefghijklmnopqrstuvwxyz0123456789"
	b := make([]byte, 5)
	for i := range b {
		n, _ := rand.Int(rand.Reader, big.NewInt(int64(len(letters))))
		b[i] = letters[n.Int64()]
	}
	return string(b)
}

// realNet is the /24 of 172.29.0.0/16 the cluster's veth pairs use (third octet), chosen
// once per cluster among those no address or route of the machine touches.
func (c *Cluster) realSubnet() (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.realNet != 0 {
		return c.realNet, nil
	}
	addrs, _ := exec.Command("ip", "-4", "-o", "addr").Output()
	routes, _ := exec.Command("ip", "-4", "route", "show", "table", "all").Output()
	used := string(addrs) + string(routes)
	if strings.Contains(used, "172.29.0.0/16") || strings.Contains(used, "172.16.0.0/12") {
		return 0, fmt.Errorf("%w: 172.29.0.0/16 is in use on this machine", ErrRealNodeUnsupported)
	}
	for try := 0; try < 50; try++ {
		n, _ := rand.Int(rand.Reader, big.NewInt(250))
		x := int(n.Int64()) + 1
		if !strings.Contains(used, fmt.Sprintf("172.29.%d.", x)) {
			c.realNet = x
			return x, nil
		}
	}
	return 0, fmt.Errorf("%w: no free /24 in 172.29.0.0/16", ErrRealNodeUnsupported)
}

// AddRealNode starts a real node and waits until it is Ready with its GPUs allocatable,
// the images imported and RuntimeClass nvidia present.
func (c *Cluster) AddRealNode(ctx context.Context, o RealNodeOptions) (_ *RealNode, err error) {
	if !realNodeProcess {
		return nil, errors.New("the program does not run real nodes: call localcluster.RealNodeProcess() first in main (or TestMain)")
	}
	if err := RealNodeSupported(c.opts); err != nil {
		return nil, err
	}
	if err := c.lockRealNodes(ctx); err != nil {
		return nil, err
	}
	subnet, err := c.realSubnet()
	if err != nil {
		return nil, err
	}
	// Every attempt takes a new /30: a failed one keeps its addresses until Stop.
	c.mu.Lock()
	idx := c.realCount
	c.realCount++
	c.mu.Unlock()
	if idx >= 60 {
		return nil, fmt.Errorf("at most 60 real nodes")
	}
	id := randID()
	rn := &RealNode{
		Name:       o.Name,
		HostIP:     fmt.Sprintf("172.29.%d.%d", subnet, 4*idx+1),
		IP:         fmt.Sprintf("172.29.%d.%d", subnet, 4*idx+2),
		Netns:      "kgpu-" + id,
		Dir:        filepath.Join(c.Dir, "n", strconv.Itoa(idx)),
		CgroupRoot: "/kubectl-gpu-" + id,
	}
	start := time.Now()
	defer func() {
		if err != nil {
			err = fmt.Errorf("real node %s: %w", o.Name, err)
		}
	}()
	if err := os.MkdirAll(rn.Dir, 0o755); err != nil {
		return nil, err
	}

	// Network: namespace, veth pair, addresses. Cleaned up by Stop from here on.
	hostIF, nodeIF := "kg"+id+"h", "kg"+id+"n"
	noteNetnsMount()
	c.addCleanup(func() { rn.removeNetwork(hostIF) })
	for _, args := range [][]string{
		{"netns", "add", rn.Netns},
		{"link", "add", hostIF, "type", "veth", "peer", "name", nodeIF, "netns", rn.Netns},
	} {
		if err := ipCmd(args...); err != nil {
			return nil, err
		}
	}
	// No IPv6 link-local address on the machine's side of the pair.
	_ = os.WriteFile("/proc/sys/net/ipv6/conf/"+hostIF+"/disable_ipv6", []byte("1"), 0o644)
	for _, args := range [][]string{
		{"addr", "add", rn.HostIP + "/30", "dev", hostIF},
		{"link", "set", hostIF, "up"},
		{"-n", rn.Netns, "addr", "add", rn.IP + "/30", "dev", nodeIF},
		{"-n", rn.Netns, "link", "set", nodeIF, "up"},
		{"-n", rn.Netns, "link", "set", "lo", "up"},
	} {
		if err := ipCmd(args...); err != nil {
			return nil, err
		}
	}

	// The API server stays on 127.0.0.1; the node reaches it through a relay on its side of
	// the pair (TLS passes through: the kubelet checks the server's certificate as
	// "localhost").
	apiURL, err := url.Parse(c.Config.Host)
	if err != nil {
		return nil, err
	}
	relay, err := net.Listen("tcp", net.JoinHostPort(rn.HostIP, "0"))
	if err != nil {
		return nil, err
	}
	c.addCleanup(func() { relay.Close() })
	go serveRelay(relay, apiURL.Host)

	files, err := c.writeRealNodeFiles(rn, o, relay.Addr().String())
	if err != nil {
		return nil, err
	}

	// Mount points the node needs that the machine lacks are made now and removed by Stop.
	for _, b := range files.Binds {
		if _, err := os.Stat(b[1]); errors.Is(err, os.ErrNotExist) {
			if err := os.MkdirAll(b[1], 0o755); err != nil {
				return nil, err
			}
			dir := b[1]
			c.addCleanup(func() { _ = os.Remove(dir) })
		}
	}
	c.addCleanup(func() { removeCgroups(rn.CgroupRoot) })

	self, err := os.Executable()
	if err != nil {
		return nil, err
	}
	cfgPath := filepath.Join(rn.Dir, "init.json")
	b, _ := json.MarshalIndent(files, "", "  ")
	if err := os.WriteFile(cfgPath, b, 0o600); err != nil {
		return nil, err
	}
	cmd := exec.Command("nsenter", "--net=/run/netns/"+rn.Netns, "--", self)
	cmd.Env = append(os.Environ(), roleEnv+"=init", configEnv+"="+cfgPath)
	// PID 1 of new PID and mount namespaces: everything of the node dies with it, and its
	// mounts never reach the machine.
	cmd.SysProcAttr = &syscall.SysProcAttr{
		Setpgid: true, Pdeathsig: syscall.SIGKILL,
		Cloneflags: syscall.CLONE_NEWPID | syscall.CLONE_NEWNS,
	}
	if err := c.spawnCmd("node-"+o.Name, cmd); err != nil {
		return nil, err
	}
	rn.initPID = cmd.Process.Pid

	if err := c.waitReady(ctx, o.Name+" containerd", 60*time.Second, func(ctx context.Context) error {
		return exec.CommandContext(ctx, "ctr", "--address", rn.Socket, "version").Run()
	}); err != nil {
		return nil, err
	}
	if err := c.importImages(ctx, rn, o.Images); err != nil {
		return nil, err
	}
	if err := c.ensureRuntimeClass(ctx, RuntimeClassNVIDIA, "nvidia"); err != nil {
		return nil, err
	}
	if err := c.waitReady(ctx, o.Name+" Ready with its GPUs", 120*time.Second, func(ctx context.Context) error {
		n, err := c.Client.CoreV1().Nodes().Get(ctx, o.Name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		q := n.Status.Allocatable[corev1.ResourceName("nvidia.com/gpu")]
		if q.Value() != int64(o.GPUs) {
			return fmt.Errorf("nvidia.com/gpu allocatable %s, want %d", q.String(), o.GPUs)
		}
		for _, cond := range n.Status.Conditions {
			if cond.Type == corev1.NodeReady && cond.Status == corev1.ConditionTrue {
				return nil
			}
		}
		return fmt.Errorf("not Ready")
	}); err != nil {
		return nil, err
	}
	c.mu.Lock()
	c.realNodes = append(c.realNodes, rn)
	c.mu.Unlock()
	fmt.Fprintf(c.log, "real node %s (%s) Ready in %s\n", o.Name, rn.IP, time.Since(start).Round(100*time.Millisecond))
	return rn, nil
}

// lockRealNodes makes this cluster the only one with real nodes on the machine until it
// stops: the fixed paths the nodes hide (/var/lib/kubelet, /run/containerd, …) are shared.
func (c *Cluster) lockRealNodes(ctx context.Context) error {
	c.mu.Lock()
	locked := c.realLock != nil
	c.mu.Unlock()
	if locked {
		return nil
	}
	f, err := os.OpenFile(filepath.Join(os.TempDir(), "kubectl-gpu-realnode.lock"), os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return err
	}
	for {
		if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err == nil {
			break
		}
		select {
		case <-ctx.Done():
			f.Close()
			return fmt.Errorf("another local cluster on this machine has real nodes: %w", ctx.Err())
		case <-time.After(time.Second):
		}
	}
	c.mu.Lock()
	c.realLock = f
	c.mu.Unlock()
	c.addCleanup(func() { f.Close() })
	return nil
}

func ipCmd(args ...string) error {
	if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
		return fmt.Errorf("ip %s: %v: %s", strings.Join(args, " "), err, bytes.TrimSpace(out))
	}
	return nil
}

// removeNetwork deletes the namespace (its end of the pair and every interface in it go
// with it) and the machine's end if it is still there.
func (rn *RealNode) removeNetwork(hostIF string) {
	_ = exec.Command("ip", "netns", "del", rn.Netns).Run()
	if _, err := os.Stat("/sys/class/net/" + hostIF); err == nil {
		_ = exec.Command("ip", "link", "del", hostIF).Run()
	}
	restoreNetnsMount()
}

// removeCgroups removes the cgroup root's directories, deepest first, in every hierarchy.
func removeCgroups(root string) {
	hs, _ := filepath.Glob("/sys/fs/cgroup/*")
	for _, h := range hs {
		top := filepath.Join(h, root)
		var dirs []string
		_ = filepath.WalkDir(top, func(p string, d os.DirEntry, err error) error {
			if err == nil && d.IsDir() {
				dirs = append(dirs, p)
			}
			return nil
		})
		for i := len(dirs) - 1; i >= 0; i-- {
			// A cgroup's processes may take a moment to be gone after the kill.
			for try := 0; try < 50; try++ {
				if err := syscall.Rmdir(dirs[i]); err == nil || errors.Is(err, syscall.ENOENT) {
					break
				}
				time.Sleep(100 * time.Millisecond)
			}
		}
	}
}

func serveRelay(l net.Listener, target string) {
	for {
		conn, err := l.Accept()
		if err != nil {
			return
		}
		go func() {
			defer conn.Close()
			up, err := net.DialTimeout("tcp", target, 5*time.Second)
			if err != nil {
				return
			}
			defer up.Close()
			var wg sync.WaitGroup
			wg.Add(2)
			pipe := func(dst, src net.Conn) {
				defer wg.Done()
				_, _ = io.Copy(dst, src)
				if tc, ok := dst.(*net.TCPConn); ok {
					_ = tc.CloseWrite()
				}
			}
			go pipe(up, conn)
			go pipe(conn, up)
			wg.Wait()
		}()
	}
}

// nodeInitConfig is what the node's init (realnode_init.go) does.
type nodeInitConfig struct {
	Name       string
	CgroupRoot string
	// Binds are [source, target] pairs mounted in the node's mount namespace.
	Binds [][2]string
	// Sysctls are /proc/sys paths covered by files holding these values.
	Sysctls map[string]string
	// SysctlDir holds those files.
	SysctlDir string
	// Socket is containerd's socket inside the node.
	Socket                               string
	Containerd, DevicePlugin, Kubelet    []string
	ContainerdLog, DevicePluginLog, KLog string
	GPUs                                 int
}

// BootIDPath is where the kernel tells the boot ID; SystemdRun is what the node agent runs
// to reboot its host.
const (
	BootIDPath = "/proc/sys/kernel/random/boot_id"
	SystemdRun = "/usr/bin/systemd-run"
)

// rebootStandIn is systemd-run inside the real node: it asks the node's init (PID 1 of the
// node's PID namespace) for a simulated reboot, which the init carries out 5 seconds later,
// as the agent's transient timer would.
const rebootStandIn = `#!/bin/sh
# Stand-in for systemd-run in the kubectl-gpu real node (test infrastructure): asks the
# node's init for a simulated reboot (kubelet, containerd and every container stopped, a new
# boot ID, started again).
kill -USR1 1
`

// RebootSupported tells whether the real node can simulate the reboot the agent asks for.
func RebootSupported() bool {
	_, err := os.Stat(SystemdRun)
	return err == nil
}

// The machine-wide sysctls the kubelet sets when they differ (pkg/kubelet/cm's
// setupKernelTunables): covered with files holding the kubelet's values, it changes none.
var kubeletSysctls = map[string]string{
	"/proc/sys/vm/overcommit_memory":      "1",
	"/proc/sys/vm/panic_on_oom":           "0",
	"/proc/sys/kernel/panic":              "10",
	"/proc/sys/kernel/panic_on_oops":      "1",
	"/proc/sys/kernel/keys/root_maxkeys":  "1000000",
	"/proc/sys/kernel/keys/root_maxbytes": "25000000",
}

func (c *Cluster) writeRealNodeFiles(rn *RealNode, o RealNodeOptions, apiAddr string) (*nodeInitConfig, error) {
	d := func(p ...string) string { return filepath.Join(append([]string{rn.Dir}, p...)...) }
	for _, sub := range []string{"kubelet", "cni-state", "run-containerd", "pod-logs", "container-logs", "etc-containerd", "cni-conf", "containerd-root", "opt", "bin", "sysctl", "pki"} {
		if err := os.MkdirAll(d(sub), 0o755); err != nil {
			return nil, err
		}
	}
	rn.Socket = d("run-containerd", "containerd.sock")
	rn.RuntimeLog = d("nvidia-runtime.log")
	rn.ContainerdConfig = d("etc-containerd", "config.toml")

	cert, key, err := loadCA(filepath.Join(c.Dir, "pki"), "ca")
	if err != nil {
		return nil, err
	}
	nodeCA := &ca{cert: cert, key: key, dir: d("pki")}
	caFile := filepath.Join(c.Dir, "pki", "ca.crt")
	clientCrt, clientKey, err := nodeCA.issue("kubelet-client", "system:node:"+o.Name, []string{"system:nodes"}, nil, nil, false)
	if err != nil {
		return nil, err
	}
	servingCrt, servingKey, err := nodeCA.issue("kubelet-serving", "system:node:"+o.Name, []string{"system:nodes"}, []net.IP{net.ParseIP(rn.IP)}, []string{o.Name}, true)
	if err != nil {
		return nil, err
	}
	kubeconfig := d("kubelet", "kubeconfig")
	if err := writeKubeconfig(kubeconfig, "https://"+apiAddr, "localhost", caFile, clientCrt, clientKey, "system:node:"+o.Name); err != nil {
		return nil, err
	}

	runc, _ := exec.LookPath("runc")
	wrapper := d("bin", "nvidia-container-runtime")
	script := fmt.Sprintf("#!/bin/sh\n# Stands in for nvidia-container-runtime (a runc shim) on a machine without GPUs:\n# logs its arguments and runs runc.\necho \"$*\" >> %q\nexec %q \"$@\"\n", rn.RuntimeLog, runc)
	if err := os.WriteFile(wrapper, []byte(script), 0o755); err != nil {
		return nil, err
	}

	containerdConfig := fmt.Sprintf(`# containerd of the local cluster's real node %[1]s, configured the way
# kubectl gpu prep --apply configures a GPU node: an nvidia runtime beside runc.
version = 2
root = %[2]q
state = "/run/containerd/state"
disabled_plugins = ["io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.devmapper"]

[grpc]
  address = "/run/containerd/containerd.sock"

[plugins]
  [plugins."io.containerd.internal.v1.opt"]
    path = %[3]q
  [plugins."io.containerd.grpc.v1.cri"]
    sandbox_image = %[4]q
    restrict_oom_score_adj = true
    disable_apparmor = true
    netns_mounts_under_state_dir = true
    stream_server_address = "127.0.0.1"
    [plugins."io.containerd.grpc.v1.cri".cni]
      bin_dir = %[5]q
      conf_dir = %[6]q
    [plugins."io.containerd.grpc.v1.cri".containerd]
      snapshotter = "overlayfs"
      default_runtime_name = "runc"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes]
        [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
          runtime_type = "io.containerd.runc.v2"
          [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
            SystemdCgroup = false
        [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.nvidia]
          runtime_type = "io.containerd.runc.v2"
          [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.nvidia.options]
            BinaryName = %[7]q
            SystemdCgroup = false
`, o.Name, d("containerd-root"), d("opt"), PauseImage, cniBinDir(), d("cni-conf"), wrapper)
	if err := os.WriteFile(rn.ContainerdConfig, []byte(containerdConfig), 0o644); err != nil {
		return nil, err
	}

	cni := `{
  "cniVersion": "0.4.0",
  "name": "kubectl-gpu-test",
  "plugins": [{
    "type": "bridge", "bridge": "cni0", "isGateway": false, "ipMasq": false,
    "ipam": {"type": "host-local", "ranges": [[{"subnet": "10.88.0.0/24"}]]}
  }]
}
`
	if err := os.WriteFile(d("cni-conf", "10-kubectl-gpu-test.conflist"), []byte(cni), 0o644); err != nil {
		return nil, err
	}

	kubeletConfig := fmt.Sprintf(`apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: %[1]s
port: 10250
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: 10248
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: true}
  x509: {clientCAFile: %[2]q}
authorization:
  mode: Webhook
tlsCertFile: %[3]q
tlsPrivateKeyFile: %[4]q
cgroupDriver: cgroupfs
cgroupRoot: %[5]s
failCgroupV1: false
failSwapOn: false
makeIPTablesUtilChains: false
protectKernelDefaults: false
containerRuntimeEndpoint: unix:///run/containerd/containerd.sock
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
evictionHard: {memory.available: "1Mi", nodefs.available: "1%%", imagefs.available: "1%%", nodefs.inodesFree: "1%%"}
podLogsDir: /var/log/pods
resolvConf: ""
maxPods: 30
serializeImagePulls: false
nodeStatusUpdateFrequency: 2s
`, rn.IP, caFile, servingCrt, servingKey, rn.CgroupRoot)
	if err := os.WriteFile(d("kubelet", "config.yaml"), []byte(kubeletConfig), 0o644); err != nil {
		return nil, err
	}

	var labels []string
	for k, v := range o.Labels {
		labels = append(labels, k+"="+v)
	}
	sort.Strings(labels)
	kubelet := []string{
		c.opts.bin("kubernetes", KubeVersion, "kubelet"),
		"--config=/var/lib/kubelet/config.yaml",
		"--kubeconfig=/var/lib/kubelet/kubeconfig",
		"--root-dir=/var/lib/kubelet",
		"--hostname-override=" + o.Name,
		"--node-ip=" + rn.IP,
		"--v=2",
	}
	if len(labels) > 0 {
		kubelet = append(kubelet, "--node-labels="+strings.Join(labels, ","))
	}
	self, _ := os.Executable()
	containerd, _ := exec.LookPath("containerd")
	logs := filepath.Join(c.Dir, "logs")
	// The node's boot ID is a file of its own over /proc/sys/kernel/random/boot_id, which
	// the kubelet reports and a simulated reboot replaces.
	sysctls := map[string]string{BootIDPath: string(uuid.NewUUID())}
	for k, v := range kubeletSysctls {
		sysctls[k] = v
	}
	binds := [][2]string{
		{d("kubelet"), "/var/lib/kubelet"},
		{d("cni-state"), "/var/lib/cni"},
		{d("run-containerd"), "/run/containerd"},
		{d("pod-logs"), "/var/log/pods"},
		{d("container-logs"), "/var/log/containers"},
		{d("etc-containerd"), "/etc/containerd"},
	}
	// What the node agent runs to reboot its host (systemd-run … systemctl reboot) asks the
	// node's init for a simulated reboot instead: a stand-in over the machine's
	// systemd-run, in the node's mount namespace only.
	if _, err := os.Stat(SystemdRun); err == nil {
		standIn := d("bin", "systemd-run-standin")
		if err := os.WriteFile(standIn, []byte(rebootStandIn), 0o755); err != nil {
			return nil, err
		}
		binds = append(binds, [2]string{standIn, SystemdRun})
	}
	return &nodeInitConfig{
		Name:            o.Name,
		CgroupRoot:      rn.CgroupRoot,
		Binds:           binds,
		Sysctls:         sysctls,
		SysctlDir:       d("sysctl"),
		Socket:          "/run/containerd/containerd.sock",
		Containerd:      []string{containerd, "--config=/etc/containerd/config.toml"},
		DevicePlugin:    []string{self},
		Kubelet:         kubelet,
		ContainerdLog:   filepath.Join(logs, o.Name+"-containerd.log"),
		DevicePluginLog: filepath.Join(logs, o.Name+"-device-plugin.log"),
		KLog:            filepath.Join(logs, o.Name+"-kubelet.log"),
		GPUs:            o.GPUs,
	}, nil
}

// importImages builds the node's images (pause, the vectoradd stand-in, and the caller's)
// and imports them into containerd's k8s.io namespace.
func (c *Cluster) importImages(ctx context.Context, rn *RealNode, extra map[string]ociimage.Spec) error {
	dir := filepath.Join(c.Dir, "images")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	bins := map[string]string{}
	for _, prog := range []string{"pause", "cuda-vectoradd-standin"} {
		out := filepath.Join(dir, prog)
		if _, err := os.Stat(out); err != nil {
			cmd := exec.CommandContext(ctx, "go", "build", "-trimpath", "-o", out, "./hack/testenv/nodeimages/"+prog)
			cmd.Dir = RepoRoot()
			cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
			if b, err := cmd.CombinedOutput(); err != nil {
				return fmt.Errorf("build %s: %v: %s", prog, err, b)
			}
		}
		bins[prog] = out
	}
	specs := map[string]ociimage.Spec{
		PauseImage: {Files: map[string]string{"/pause": bins["pause"]}, Entrypoint: []string{"/pause"}},
	}
	for tag, mode := range map[string]string{VectorAddStandInOK: "pass", VectorAddStandInBad: "fail", VectorAddStandInZzz: "sleep"} {
		specs[tag] = ociimage.Spec{
			Files:      map[string]string{"/usr/local/bin/vectoradd": bins["cuda-vectoradd-standin"]},
			Entrypoint: []string{"/usr/local/bin/vectoradd"},
			Env:        []string{"STANDIN_MODE=" + mode},
			Labels:     map[string]string{"io.kubectl-gpu.test.stand-in": "CUDA vectoradd stand-in: runs no CUDA code"},
		}
	}
	for ref, s := range extra {
		specs[ref] = s
	}
	var refs []string
	for ref := range specs {
		refs = append(refs, ref)
	}
	sort.Strings(refs)
	for i, ref := range refs {
		img, err := ociimage.Build(specs[ref])
		if err != nil {
			return fmt.Errorf("image %s: %w", ref, err)
		}
		tar := filepath.Join(dir, fmt.Sprintf("%s-%d.tar", rn.Name, i))
		if err := ociimage.WriteTarball(tar, ref, img); err != nil {
			return err
		}
		out, err := exec.CommandContext(ctx, "ctr", "--address", rn.Socket, "-n", "k8s.io", "images", "import", tar).CombinedOutput()
		if err != nil {
			return fmt.Errorf("import %s: %v: %s", ref, err, out)
		}
		_ = os.Remove(tar)
	}
	return nil
}

// ImportImage adds an image to a real node (for tests that build their own).
func (c *Cluster) ImportImage(ctx context.Context, rn *RealNode, ref string, s ociimage.Spec) error {
	return c.importImages(ctx, rn, map[string]ociimage.Spec{ref: s})
}

func (c *Cluster) ensureRuntimeClass(ctx context.Context, name, handler string) error {
	_, err := c.Client.NodeV1().RuntimeClasses().Create(ctx, &nodev1.RuntimeClass{
		ObjectMeta: metav1.ObjectMeta{Name: name}, Handler: handler,
	}, metav1.CreateOptions{})
	if apierrors.IsAlreadyExists(err) {
		return nil
	}
	return err
}

// RealNodes returns the cluster's real nodes.
func (c *Cluster) RealNodes() []*RealNode {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]*RealNode(nil), c.realNodes...)
}

// RepoRoot is the module's root directory (this file's place in it).
func RepoRoot() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "..", "..")
}
