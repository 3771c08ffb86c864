package localcluster

// The real node's init: this package's code run again from the same executable (the test
// binary or hack/devtools/cluster) as PID 1 of the node's PID and mount namespaces, inside its
// network namespace, and the fake device plugin it starts. A program that adds real nodes
// calls RealNodeProcess first thing in main (a test package: in TestMain).

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"k8s.io/apimachinery/pkg/util/uuid"

	"github.com/kubectl-gpu/kubectl-gpu/hack/testenv/fakedeviceplugin"
)

const (
	roleEnv   = "KGPU_REALNODE_ROLE"
	configEnv = "KGPU_REALNODE_CONFIG"
	gpusEnv   = "KGPU_REALNODE_GPUS"
)

// realNodeProcess tells that the program calls RealNodeProcess (AddRealNode needs it).
var realNodeProcess bool

// RealNodeProcess runs this process as a real node's init or fake device plugin when
// AddRealNode started it so (an environment variable says), and exits; otherwise it
// returns at once. A program that adds real nodes calls it before anything else: main, or
// a test package's TestMain.
func RealNodeProcess() {
	realNodeProcess = true
	role := os.Getenv(roleEnv)
	if role == "" {
		return
	}
	var err error
	switch role {
	case "init":
		err = nodeInit(os.Getenv(configEnv))
	case "device-plugin":
		n, _ := strconv.Atoi(os.Getenv(gpusEnv))
		ctx, cancel := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
		defer cancel()
		fmt.Fprintf(os.Stderr, "fake device plugin (test infrastructure): %d nvidia.com/gpu\n", n)
		err = (&fakedeviceplugin.Plugin{Resource: "nvidia.com/gpu", Count: n}).Run(ctx)
	default:
		err = fmt.Errorf("unknown %s %q", roleEnv, role)
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "real node %s: %v\n", role, err)
		os.Exit(1)
	}
	os.Exit(0)
}

func nodeInit(cfgPath string) error {
	b, err := os.ReadFile(cfgPath)
	if err != nil {
		return err
	}
	var cfg nodeInitConfig
	if err := json.Unmarshal(b, &cfg); err != nil {
		return err
	}
	if os.Getpid() != 1 {
		return fmt.Errorf("not PID 1 of a PID namespace of its own")
	}
	if err := nodeMounts(&cfg); err != nil {
		return fmt.Errorf("mounts: %w", err)
	}

	sigs := make(chan os.Signal, 16)
	signal.Notify(sigs, syscall.SIGCHLD, syscall.SIGTERM, syscall.SIGINT, syscall.SIGUSR1, syscall.SIGUSR2, syscall.SIGHUP)
	children := map[int]string{}
	start := func(name, logPath string, argv []string, env ...string) error {
		logf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
		if err != nil {
			return err
		}
		defer logf.Close()
		p, err := os.StartProcess(argv[0], argv, &os.ProcAttr{
			Env:   append(childEnv(), env...),
			Files: []*os.File{nil, logf, logf},
			Sys:   &syscall.SysProcAttr{Setpgid: true},
		})
		if err != nil {
			return fmt.Errorf("start %s: %w", name, err)
		}
		children[p.Pid] = name
		fmt.Fprintf(os.Stderr, "started %s (pid %d in the node)\n", name, p.Pid)
		return nil
	}
	// reap collects every exited child (PID 1 inherits the shims' orphans too).
	reap := func() {
		for {
			var ws syscall.WaitStatus
			pid, err := syscall.Wait4(-1, &ws, syscall.WNOHANG, nil)
			if pid <= 0 || err != nil {
				return
			}
			if name, ok := children[pid]; ok {
				fmt.Fprintf(os.Stderr, "%s exited: %v\n", name, exitText(ws))
				delete(children, pid)
			}
		}
	}
	stopAll := func() {
		order := [][]string{{"kubelet", "device-plugin"}, {"containerd"}}
		for _, names := range order {
			for pid, name := range children {
				for _, n := range names {
					if name == n {
						_ = syscall.Kill(-pid, syscall.SIGTERM)
					}
				}
			}
			deadline := time.Now().Add(8 * time.Second)
			for time.Now().Before(deadline) {
				reap()
				left := false
				for _, name := range children {
					for _, n := range names {
						left = left || name == n
					}
				}
				if !left {
					break
				}
				time.Sleep(100 * time.Millisecond)
			}
		}
	}

	boot := func() error {
		_ = os.Remove(cfg.Socket)
		if err := start("containerd", cfg.ContainerdLog, cfg.Containerd); err != nil {
			return err
		}
		for i := 0; ; i++ {
			if _, err := os.Stat(cfg.Socket); err == nil {
				break
			}
			if i > 300 {
				stopAll()
				return fmt.Errorf("containerd socket %s did not appear (log: %s)", cfg.Socket, cfg.ContainerdLog)
			}
			reap()
			time.Sleep(100 * time.Millisecond)
		}
		if err := start("device-plugin", cfg.DevicePluginLog, cfg.DevicePlugin, roleEnv+"=device-plugin", gpusEnv+"="+strconv.Itoa(cfg.GPUs)); err != nil {
			stopAll()
			return err
		}
		if err := start("kubelet", cfg.KLog, cfg.Kubelet); err != nil {
			stopAll()
			return err
		}
		return nil
	}
	if err := boot(); err != nil {
		return err
	}
	running := func(name string) int {
		for pid, n := range children {
			if n == name {
				return pid
			}
		}
		return 0
	}
	for s := range sigs {
		if s == syscall.SIGCHLD {
			reap()
			continue
		}
		if s == syscall.SIGUSR2 {
			// The device plugin stopped (RealNode.StopDevicePlugin).
			if pid := running("device-plugin"); pid != 0 {
				fmt.Fprintln(os.Stderr, "stopping the device plugin")
				_ = syscall.Kill(-pid, syscall.SIGTERM)
				for i := 0; i < 80 && running("device-plugin") != 0; i++ {
					reap()
					time.Sleep(100 * time.Millisecond)
				}
			}
			continue
		}
		if s == syscall.SIGHUP {
			// The device plugin started again (RealNode.StartDevicePlugin).
			if running("device-plugin") == 0 {
				if err := start("device-plugin", cfg.DevicePluginLog, cfg.DevicePlugin, roleEnv+"=device-plugin", gpusEnv+"="+strconv.Itoa(cfg.GPUs)); err != nil {
					fmt.Fprintln(os.Stderr, err)
				}
			}
			continue
		}
		if s == syscall.SIGUSR1 {
			// A simulated reboot, asked for by the systemd-run stand-in: 5 s later (the
			// agent's timer), everything of the node stops — the kubelet, the device plugin,
			// containerd, then every process left (shims, containers) — the boot ID changes,
			// and the node starts again.
			fmt.Fprintln(os.Stderr, "reboot asked for: rebooting in 5 s")
			time.Sleep(5 * time.Second)
			stopAll()
			_ = syscall.Kill(-1, syscall.SIGKILL) // every process of the node but this init
			for i := 0; i < 50; i++ {
				reap()
				time.Sleep(100 * time.Millisecond)
			}
			f := filepath.Join(cfg.SysctlDir, strings.ReplaceAll(strings.TrimPrefix(BootIDPath, "/proc/sys/"), "/", "."))
			if err := os.WriteFile(f, []byte(newBootID()+"\n"), 0o644); err != nil {
				return fmt.Errorf("new boot ID: %w", err)
			}
			fmt.Fprintln(os.Stderr, "rebooted: starting the node again")
			if err := boot(); err != nil {
				return err
			}
			continue
		}
		fmt.Fprintf(os.Stderr, "%v: stopping the node\n", s)
		stopAll()
		// Returning ends PID 1: the kernel kills whatever is left in the namespace.
		return nil
	}
	return nil
}

// childEnv is the init's environment without its own role and configuration.
func childEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, roleEnv+"=") && !strings.HasPrefix(kv, configEnv+"=") {
			env = append(env, kv)
		}
	}
	return env
}

func exitText(ws syscall.WaitStatus) string {
	if ws.Signaled() {
		return "signal " + ws.Signal().String()
	}
	return "exit status " + strconv.Itoa(ws.ExitStatus())
}

type cgroupMount struct{ dir, fstype, opts string }

// nodeMounts makes the node's mount namespace: private propagation, its own /proc and
// /sys (for its PID and network namespaces), the cgroup hierarchies mounted again under the
// new /sys with the kubelet's cgroup root in each, the private directories bound over the
// fixed paths, and the sysctl files covered.
func nodeMounts(cfg *nodeInitConfig) error {
	if err := syscall.Mount("", "/", "", syscall.MS_REC|syscall.MS_PRIVATE, ""); err != nil {
		return fmt.Errorf("make / private: %w", err)
	}
	cgroups, err := cgroupMounts()
	if err != nil {
		return err
	}
	const nosuid = syscall.MS_NOSUID | syscall.MS_NODEV | syscall.MS_NOEXEC
	if err := syscall.Mount("proc", "/proc", "proc", nosuid, ""); err != nil {
		return fmt.Errorf("mount /proc: %w", err)
	}
	if err := syscall.Mount("sysfs", "/sys", "sysfs", nosuid, ""); err != nil {
		return fmt.Errorf("mount /sys: %w", err)
	}
	if err := syscall.Mount("tmpfs", "/sys/fs/cgroup", "tmpfs", nosuid, "mode=755"); err != nil {
		return fmt.Errorf("mount /sys/fs/cgroup: %w", err)
	}
	for _, m := range cgroups {
		if err := os.MkdirAll(m.dir, 0o755); err != nil {
			return err
		}
		if err := syscall.Mount("cgroup", m.dir, m.fstype, nosuid, m.opts); err != nil {
			return fmt.Errorf("mount %s (%s %s): %w", m.dir, m.fstype, m.opts, err)
		}
		if m.fstype != "cgroup" {
			continue
		}
		root := filepath.Join(m.dir, cfg.CgroupRoot)
		if err := os.MkdirAll(root, 0o755); err != nil {
			return err
		}
		if strings.Contains(","+m.opts+",", ",cpuset,") {
			for _, f := range []string{"cpuset.cpus", "cpuset.mems"} {
				v, err := os.ReadFile(filepath.Join(m.dir, f))
				if err != nil {
					return err
				}
				if err := os.WriteFile(filepath.Join(root, f), v, 0o644); err != nil {
					return err
				}
			}
		}
	}
	for _, b := range cfg.Binds {
		if err := syscall.Mount(b[0], b[1], "", syscall.MS_BIND|syscall.MS_REC, ""); err != nil {
			return fmt.Errorf("bind %s on %s: %w", b[0], b[1], err)
		}
	}
	for path, value := range cfg.Sysctls {
		f := filepath.Join(cfg.SysctlDir, strings.ReplaceAll(strings.TrimPrefix(path, "/proc/sys/"), "/", "."))
		if err := os.WriteFile(f, []byte(value+"\n"), 0o644); err != nil {
			return err
		}
		if err := syscall.Mount(f, path, "", syscall.MS_BIND, ""); err != nil {
			return fmt.Errorf("cover %s: %w", path, err)
		}
	}
	return nil
}

// cgroupMounts lists the cgroup hierarchies mounted under /sys/fs/cgroup, with the options
// to mount them again (the controllers, or name=…).
func cgroupMounts() ([]cgroupMount, error) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var ms []cgroupMount
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		// id parent maj:min root mountpoint opts [optional...] - fstype source superopts
		parts := strings.SplitN(sc.Text(), " - ", 2)
		if len(parts) != 2 {
			continue
		}
		left, right := strings.Fields(parts[0]), strings.Fields(parts[1])
		if len(left) < 5 || len(right) < 3 {
			continue
		}
		dir, fstype := left[4], right[0]
		if (fstype != "cgroup" && fstype != "cgroup2") || !strings.HasPrefix(dir, "/sys/fs/cgroup/") {
			continue
		}
		var opts []string
		for _, o := range strings.Split(right[2], ",") {
			if o != "rw" && o != "ro" {
				opts = append(opts, o)
			}
		}
		ms = append(ms, cgroupMount{dir: dir, fstype: fstype, opts: strings.Join(opts, ",")})
	}
	if len(ms) == 0 {
		return nil, fmt.Errorf("no cgroup hierarchy under /sys/fs/cgroup")
	}
	return ms, sc.Err()
}

func newBootID() string { return string(uuid.NewUUID()) }
