// Package localcluster runs a real Kubernetes control plane on this machine for tests and
// the demo: etcd, kube-apiserver, kube-controller-manager and kube-scheduler built from the
// Go module proxy at pinned versions (hack/testenv/build-tools.sh), with GPU nodes simulated by
// kwok. Everything listens on 127.0.0.1 only, certificates are made on the fly, and Stop
// leaves no process behind.
//
// What is simulated: kwok makes the nodes up (no kubelet, no container runs), moves pods
// through their phases by its Stages, and serves pod logs from files (Logs objects).
// Everything else (API server, admission, RBAC, scheduler, Job and garbage-collection
// controllers) is the real thing.
package localcluster

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
)

// Versions pinned by hack/testenv/versions.sh; the binaries live under BinDir.
const (
	KubeVersion = "v1.36.3"
	EtcdVersion = "v3.6.16"
	KwokVersion = "v0.8.0"
	// KwokBuild is kwok as built here: KwokVersion with hack/testenv/kwok-uid.patch and
	// kwok-stages.patch.
	KwokBuild = KwokVersion + "-uid-stages"
)

// Options configure a cluster.
type Options struct {
	// Dir holds certificates, data, logs and the kubeconfig. Empty: a new temporary
	// directory, removed by Stop.
	Dir string
	// BinDir is where hack/testenv/build-tools.sh put the binaries (default: $KGPU_CACHE_DIR/bin or
	// ~/.cache/kubectl-gpu/bin).
	BinDir string
	// Log receives progress lines; nil discards them.
	Log io.Writer
}

// Cluster is a running local cluster.
type Cluster struct {
	Dir        string
	Kubeconfig string
	Config     *rest.Config
	Client     kubernetes.Interface
	// KwokPort serves the simulated kubelets' API (logs, exec) on 127.0.0.1.
	KwokPort int

	opts    Options
	tempDir bool
	// keep: Stop leaves the directory (KeepLogs).
	keep bool
	log  io.Writer
	// schedulerRestarts counts the scheduler restarts ensureScheduling made.
	schedulerRestarts int
	mu                sync.Mutex
	procs             []*process
	stopped           bool
	// cleanups undo what is not a process (real nodes' network namespaces, cgroups, mount
	// points); Stop runs them last first, after every process has ended.
	cleanups  []func()
	realNet   int
	realCount int
	realNodes []*RealNode
	realLock  *os.File
}

func (c *Cluster) addCleanup(f func()) {
	c.mu.Lock()
	c.cleanups = append(c.cleanups, f)
	c.mu.Unlock()
}

// DefaultBinDir is where hack/testenv/build-tools.sh caches the binaries.
func DefaultBinDir() string {
	if d := os.Getenv("KGPU_CACHE_DIR"); d != "" {
		return filepath.Join(d, "bin")
	}
	if d := os.Getenv("XDG_CACHE_HOME"); d != "" {
		return filepath.Join(d, "kubectl-gpu", "bin")
	}
	home, _ := os.UserHomeDir()
	return filepath.Join(home, ".cache", "kubectl-gpu", "bin")
}

// ErrNoBinaries is returned when the cluster binaries have not been built.
var ErrNoBinaries = errors.New("local cluster binaries not built: run 'make tools' (hack/testenv/build-tools.sh)")

func (o Options) bin(component, version, name string) string {
	return filepath.Join(o.BinDir, component+"-"+version, name)
}

// Start brings up etcd, the control plane and kwok and waits until they serve. On error
// everything started so far is stopped.
func Start(ctx context.Context, opts Options) (c *Cluster, err error) {
	if opts.BinDir == "" {
		opts.BinDir = DefaultBinDir()
	}
	for _, b := range []string{
		opts.bin("etcd", EtcdVersion, "etcd"),
		opts.bin("kubernetes", KubeVersion, "kube-apiserver"),
		opts.bin("kubernetes", KubeVersion, "kube-controller-manager"),
		opts.bin("kubernetes", KubeVersion, "kube-scheduler"),
		opts.bin("kwok", KwokBuild, "kwok"),
	} {
		if _, err := os.Stat(b); err != nil {
			return nil, fmt.Errorf("%w (missing %s)", ErrNoBinaries, b)
		}
	}
	c = &Cluster{opts: opts, log: opts.Log}
	if c.log == nil {
		c.log = io.Discard
	}
	if opts.Dir == "" {
		d, err := os.MkdirTemp("", "kubectl-gpu-cluster-")
		if err != nil {
			return nil, err
		}
		opts.Dir, c.tempDir = d, true
	}
	c.Dir = opts.Dir
	defer func() {
		if err != nil {
			c.Stop()
		}
	}()
	for _, d := range []string{"pki", "logs", "etcd", "kwok"} {
		if err := os.MkdirAll(filepath.Join(c.Dir, d), 0o700); err != nil {
			return nil, err
		}
	}
	start := time.Now()
	if err := c.startControlPlane(ctx); err != nil {
		return nil, err
	}
	if err := c.startKwok(ctx); err != nil {
		return nil, err
	}
	fmt.Fprintf(c.log, "local cluster ready in %s: KUBECONFIG=%s\n", time.Since(start).Round(100*time.Millisecond), c.Kubeconfig)
	return c, nil
}

func (c *Cluster) startControlPlane(ctx context.Context) error {
	pki := filepath.Join(c.Dir, "pki")
	ports, err := freePorts(5)
	if err != nil {
		return err
	}
	etcdClient, etcdPeer, apiPort, etcdMetrics := ports[0], ports[1], ports[2], ports[3]
	c.KwokPort = ports[4]
	lo := []net.IP{net.ParseIP("127.0.0.1")}

	ca, err := newCA(pki, "ca")
	if err != nil {
		return err
	}
	serving, servingKey, err := ca.issue("apiserver", "kube-apiserver", nil, append(lo, net.ParseIP("10.96.0.1")),
		[]string{"localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc", "kubernetes.default.svc.cluster.local"}, true)
	if err != nil {
		return err
	}
	kubeletClient, kubeletClientKey, err := ca.issue("apiserver-kubelet-client", "kube-apiserver-kubelet-client", []string{"system:masters"}, nil, nil, false)
	if err != nil {
		return err
	}
	proxyClient, proxyClientKey, err := ca.issue("front-proxy-client", "front-proxy-client", nil, nil, nil, false)
	if err != nil {
		return err
	}
	saPub, saKey, err := serviceAccountKeys(pki)
	if err != nil {
		return err
	}
	server := "https://127.0.0.1:" + strconv.Itoa(apiPort)
	kubeconfigs := map[string][2]string{
		"admin":              {"kubernetes-admin", "system:masters"},
		"controller-manager": {"system:kube-controller-manager", ""},
		"scheduler":          {"system:kube-scheduler", ""},
		"kwok":               {"kwok-controller", "system:masters"},
	}
	for name, subject := range kubeconfigs {
		var orgs []string
		if subject[1] != "" {
			orgs = []string{subject[1]}
		}
		crt, key, err := ca.issue(name, subject[0], orgs, nil, nil, false)
		if err != nil {
			return err
		}
		if err := writeKubeconfig(filepath.Join(c.Dir, name+".kubeconfig"), server, "", ca.certFile(), crt, key, subject[0]); err != nil {
			return err
		}
	}
	c.Kubeconfig = filepath.Join(c.Dir, "admin.kubeconfig")

	etcdURL := "http://127.0.0.1:" + strconv.Itoa(etcdClient)
	peerURL := "http://127.0.0.1:" + strconv.Itoa(etcdPeer)
	if err := c.spawn("etcd", c.opts.bin("etcd", EtcdVersion, "etcd"),
		"--name=default",
		"--data-dir="+filepath.Join(c.Dir, "etcd"),
		"--listen-client-urls="+etcdURL, "--advertise-client-urls="+etcdURL,
		"--listen-peer-urls="+peerURL, "--initial-advertise-peer-urls="+peerURL,
		"--initial-cluster=default="+peerURL,
		"--listen-metrics-urls=http://127.0.0.1:"+strconv.Itoa(etcdMetrics),
		"--unsafe-no-fsync", "--log-level=warn",
	); err != nil {
		return err
	}
	if err := c.spawn("kube-apiserver", c.opts.bin("kubernetes", KubeVersion, "kube-apiserver"),
		"--etcd-servers="+etcdURL,
		"--bind-address=127.0.0.1", "--advertise-address=127.0.0.1", "--secure-port="+strconv.Itoa(apiPort),
		"--cert-dir="+pki,
		"--tls-cert-file="+serving, "--tls-private-key-file="+servingKey,
		"--client-ca-file="+ca.certFile(),
		"--service-account-issuer=https://kubernetes.default.svc.cluster.local",
		"--service-account-key-file="+saPub, "--service-account-signing-key-file="+saKey,
		"--service-cluster-ip-range=10.96.0.0/16",
		"--authorization-mode=Node,RBAC", "--allow-privileged=true",
		"--endpoint-reconciler-type=none",
		"--kubelet-preferred-address-types=InternalIP",
		"--kubelet-client-certificate="+kubeletClient, "--kubelet-client-key="+kubeletClientKey,
		"--kubelet-certificate-authority="+ca.certFile(),
		"--requestheader-client-ca-file="+ca.certFile(),
		"--requestheader-allowed-names=front-proxy-client",
		"--requestheader-username-headers=X-Remote-User",
		"--requestheader-group-headers=X-Remote-Group",
		"--requestheader-extra-headers-prefix=X-Remote-Extra-",
		"--proxy-client-cert-file="+proxyClient, "--proxy-client-key-file="+proxyClientKey,
		"--profiling=false",
	); err != nil {
		return err
	}
	cfg, err := clientcmd.BuildConfigFromFlags("", c.Kubeconfig)
	if err != nil {
		return err
	}
	cfg.QPS, cfg.Burst = 500, 1000
	c.Config = cfg
	if c.Client, err = kubernetes.NewForConfig(cfg); err != nil {
		return err
	}
	if err := c.waitReady(ctx, "kube-apiserver", 60*time.Second, func(ctx context.Context) error {
		body, err := c.Client.Discovery().RESTClient().Get().AbsPath("/readyz").DoRaw(ctx)
		if err != nil {
			return fmt.Errorf("%v: %s", err, body)
		}
		return nil
	}); err != nil {
		return err
	}

	if err := c.spawn("kube-controller-manager", c.opts.bin("kubernetes", KubeVersion, "kube-controller-manager"),
		"--kubeconfig="+filepath.Join(c.Dir, "controller-manager.kubeconfig"),
		"--authentication-kubeconfig="+filepath.Join(c.Dir, "controller-manager.kubeconfig"),
		"--authorization-kubeconfig="+filepath.Join(c.Dir, "controller-manager.kubeconfig"),
		"--bind-address=127.0.0.1", "--secure-port=0",
		"--leader-elect=false",
		"--use-service-account-credentials=true",
		"--service-account-private-key-file="+saKey,
		"--root-ca-file="+ca.certFile(),
		"--cluster-signing-cert-file="+ca.certFile(), "--cluster-signing-key-file="+filepath.Join(pki, "ca.key"),
		"--concurrent-job-syncs=50", "--concurrent-gc-syncs=50",
		"--kube-api-qps=500", "--kube-api-burst=1000",
		"--profiling=false",
	); err != nil {
		return err
	}
	if err := c.spawn("kube-scheduler", c.opts.bin("kubernetes", KubeVersion, "kube-scheduler"),
		"--kubeconfig="+filepath.Join(c.Dir, "scheduler.kubeconfig"),
		"--authentication-kubeconfig="+filepath.Join(c.Dir, "scheduler.kubeconfig"),
		"--authorization-kubeconfig="+filepath.Join(c.Dir, "scheduler.kubeconfig"),
		"--bind-address=127.0.0.1", "--secure-port=0",
		"--leader-elect=false",
		"--kube-api-qps=500", "--kube-api-burst=1000",
		"--profiling=false",
	); err != nil {
		return err
	}
	// The service account controller of the controller-manager makes "default" in every
	// namespace; pods cannot be created before it has.
	return c.waitReady(ctx, "kube-controller-manager", 60*time.Second, func(ctx context.Context) error {
		_, err := c.Client.CoreV1().ServiceAccounts("default").Get(ctx, "default", metav1.GetOptions{})
		return err
	})
}

// waitReady polls check until it succeeds, a process dies, or timeout.
func (c *Cluster) waitReady(ctx context.Context, what string, timeout time.Duration, check func(context.Context) error) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var last error
	for {
		cctx, ccancel := context.WithTimeout(ctx, 5*time.Second)
		last = check(cctx)
		ccancel()
		if last == nil {
			return nil
		}
		if err := c.exited(); err != nil {
			return err
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s not ready after %s: %v (logs in %s)", what, timeout, last, filepath.Join(c.Dir, "logs"))
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// Stop ends every process (TERM, then KILL after 10 s) in reverse start order and removes a
// temporary directory. It is safe to call more than once.
func (c *Cluster) Stop() {
	c.mu.Lock()
	if c.stopped {
		c.mu.Unlock()
		return
	}
	c.stopped = true
	procs := c.procs
	c.mu.Unlock()
	for i := len(procs) - 1; i >= 0; i-- {
		procs[i].stop(10 * time.Second)
	}
	c.mu.Lock()
	cleanups := c.cleanups
	c.mu.Unlock()
	for i := len(cleanups) - 1; i >= 0; i-- {
		cleanups[i]()
	}
	if c.tempDir && !c.keep && os.Getenv("KGPU_KEEP_CLUSTER_DIR") == "" {
		os.RemoveAll(c.Dir)
	}
}

// KeepLogs keeps the cluster's directory after Stop (a failed start: its logs are what says
// why) and returns the last n lines of each log, to print where the directory is not read.
func (c *Cluster) KeepLogs(n int) string {
	c.mu.Lock()
	c.keep = true
	c.mu.Unlock()
	dir := filepath.Join(c.Dir, "logs")
	files, _ := filepath.Glob(filepath.Join(dir, "*"))
	var b strings.Builder
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil || len(data) == 0 {
			continue
		}
		lines := strings.Split(strings.TrimRight(string(data), "\n"), "\n")
		if len(lines) > n {
			lines = lines[len(lines)-n:]
		}
		fmt.Fprintf(&b, "==> %s (last %d lines) <==\n%s\n", f, len(lines), strings.Join(lines, "\n"))
	}
	return b.String()
}

// RestartAPIServer restarts kube-apiserver (see Restart): the fault tests' "API server
// restarted in the middle of a run".
func (c *Cluster) RestartAPIServer(ctx context.Context, down time.Duration) error {
	return c.Restart(ctx, "kube-apiserver", down)
}

// Restart stops one of the cluster's processes by name (SIGTERM), waits down for the given
// time, starts it again with the same flags and waits until the API server is ready again
// (its readiness covers etcd).
func (c *Cluster) Restart(ctx context.Context, name string, down time.Duration) error {
	if err := c.restartProcess(name, down); err != nil {
		return err
	}
	if err := c.waitReady(ctx, name, 60*time.Second, func(ctx context.Context) error {
		_, err := c.Client.Discovery().RESTClient().Get().AbsPath("/readyz").DoRaw(ctx)
		return err
	}); err != nil {
		return err
	}
	if name == "kube-apiserver" || name == "etcd" {
		return c.ensureScheduling(ctx)
	}
	return nil
}

// ensureScheduling checks that the scheduler places a pod again after the API server came
// back. Right after a restart the API server refuses the scheduler's watches until its RBAC
// cache is filled ("cannot watch resource"), and once in a few runs the scheduler then
// placed no pod for minutes. A control plane's scheduler runs under a kubelet that restarts
// it when it stops working; the harness does the same: if a probe pod is not placed within
// 30 s, the scheduler is restarted (said on the cluster's log) and probed again.
func (c *Cluster) ensureScheduling(ctx context.Context) error {
	for attempt := 0; attempt < 2; attempt++ {
		if c.probeScheduling(ctx, 30*time.Second) == nil {
			return nil
		}
		if attempt == 0 {
			fmt.Fprintln(c.log, "kube-scheduler placed no pod within 30 s of the API server's return: restarting it")
			c.mu.Lock()
			c.schedulerRestarts++
			c.mu.Unlock()
			if err := c.restartProcess("kube-scheduler", 0); err != nil {
				return err
			}
		}
	}
	return fmt.Errorf("kube-scheduler places no pod after the API server restart (logs in %s)", filepath.Join(c.Dir, "logs"))
}

// probeScheduling creates a pod that any node can take and waits until it is placed.
func (c *Cluster) probeScheduling(ctx context.Context, timeout time.Duration) error {
	name := fmt.Sprintf("scheduler-probe-%d", time.Now().UnixNano())
	pods := c.Client.CoreV1().Pods("default")
	p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec: corev1.PodSpec{Tolerations: []corev1.Toleration{{Operator: corev1.TolerationOpExists}},
			Containers: []corev1.Container{{Name: "probe", Image: "registry.invalid/probe:1"}}}}
	defer func() {
		_ = pods.Delete(context.WithoutCancel(ctx), name, metav1.DeleteOptions{GracePeriodSeconds: new(int64)})
	}()
	return c.waitReady(ctx, "scheduler probe", timeout, func(ctx context.Context) error {
		cur, err := pods.Get(ctx, name, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			_, err = pods.Create(ctx, p, metav1.CreateOptions{})
			if err == nil {
				err = errors.New("created")
			}
			return err
		}
		if err != nil {
			return err
		}
		if cur.Spec.NodeName == "" {
			return errors.New("not placed yet")
		}
		return nil
	})
}

// restartProcess stops a process by name (SIGTERM), waits down, and starts it again with
// the same flags; the new process takes the old one's place in the stop order.
func (c *Cluster) restartProcess(name string, down time.Duration) error {
	c.mu.Lock()
	var old *process
	idx := -1
	for i, p := range c.procs {
		if p.name == name {
			old, idx = p, i
		}
	}
	c.mu.Unlock()
	if old == nil {
		return fmt.Errorf("no process %s", name)
	}
	old.stop(10 * time.Second)
	time.Sleep(down)
	if err := c.spawn(name, old.bin, old.args...); err != nil {
		return err
	}
	c.mu.Lock()
	n := len(c.procs) - 1
	c.procs[idx], c.procs = c.procs[n], c.procs[:n]
	c.mu.Unlock()
	return nil
}

// PIDs returns the process IDs of the cluster's processes (for leak checks).
func (c *Cluster) PIDs() []int {
	c.mu.Lock()
	defer c.mu.Unlock()
	var pids []int
	for _, p := range c.procs {
		pids = append(pids, p.cmd.Process.Pid)
	}
	return pids
}

type process struct {
	name string
	bin  string
	args []string
	cmd  *exec.Cmd
	done chan struct{}
	err  error
}

func (c *Cluster) spawn(name, bin string, args ...string) error {
	cmd := exec.Command(bin, args...)
	// A process group of its own (Stop signals the group), and SIGKILL when the process
	// that started it dies, so a killed test run leaves nothing behind.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	return c.spawnCmd(name, cmd)
}

// spawnCmd starts cmd with its output in logs/name.log and keeps it for Stop.
func (c *Cluster) spawnCmd(name string, cmd *exec.Cmd) error {
	bin, args := cmd.Path, cmd.Args[1:]
	logf, err := os.OpenFile(filepath.Join(c.Dir, "logs", name+".log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return err
	}
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		logf.Close()
		return fmt.Errorf("start %s: %w", name, err)
	}
	p := &process{name: name, bin: bin, args: args, cmd: cmd, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		logf.Close()
		close(p.done)
	}()
	c.mu.Lock()
	c.procs = append(c.procs, p)
	c.mu.Unlock()
	fmt.Fprintf(c.log, "started %s (pid %d)\n", name, cmd.Process.Pid)
	return nil
}

// exited reports a process that ended before Stop.
func (c *Cluster) exited() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, p := range c.procs {
		select {
		case <-p.done:
			return fmt.Errorf("%s exited: %v (log: %s)", p.name, p.err, filepath.Join(c.Dir, "logs", p.name+".log"))
		default:
		}
	}
	return nil
}

func (p *process) stop(grace time.Duration) {
	select {
	case <-p.done:
		return
	default:
	}
	_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(grace):
		_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
		<-p.done
	}
}

// freePorts asks the kernel for n unused TCP ports on 127.0.0.1.
func freePorts(n int) ([]int, error) {
	var ls []net.Listener
	defer func() {
		for _, l := range ls {
			l.Close()
		}
	}()
	ports := make([]int, 0, n)
	for i := 0; i < n; i++ {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		ls = append(ls, l)
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}

// SchedulerRestarts tells how often the scheduler had to be restarted after an API server
// restart (see ensureScheduling).
func (c *Cluster) SchedulerRestarts() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.schedulerRestarts
}
