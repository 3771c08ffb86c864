package hostconfig

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	ctkcontainerd "github.com/NVIDIA/nvidia-container-toolkit/pkg/config/engine/containerd"
	ctktoml "github.com/NVIDIA/nvidia-container-toolkit/pkg/config/toml"

	rep "github.com/kubectl-gpu/kubectl-gpu/common/nodereport"
)

// The links doctor reads from the host: XIDs in the kernel log, the driver's libraries and
// kernels, CDI specs, and the containerd config as containerd merges it with its drop-ins.

func write(t *testing.T, root, p, content string) {
	t.Helper()
	full := filepath.Join(root, p)
	if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(full, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

func check(t *testing.T, r *rep.Report, id string, want rep.Status, contains ...string) rep.Check {
	t.Helper()
	c, ok := r.Get(id)
	if !ok {
		t.Fatalf("no %s check: %+v", id, r.Checks)
	}
	if c.Status != want {
		t.Errorf("%s = %s (%s), want %s", id, c.Status, c.Message, want)
	}
	for _, s := range contains {
		if !strings.Contains(c.Message+" → "+c.Remediation, s) {
			t.Errorf("%s: %q → %q; want it to say %q", id, c.Message, c.Remediation, s)
		}
	}
	return c
}

// Lines in the kernel log's syslog form (Ubuntu's kern.log), as NVIDIA's drivers print them.
const (
	lastBoot = `Dec  5 22:01:00 gpu-7 kernel: [    0.000000] Linux version 6.8.0-45-generic (buildd@lcy02-amd64-075) (x86_64-linux-gnu-gcc-13) #45-Ubuntu SMP
Dec  5 23:10:11 gpu-7 kernel: [ 4000.100000] NVRM: Xid (PCI:0000:07:00): 79, pid='<unknown>', name=<unknown>, GPU has fallen off the bus.
`
	thisBoot = `Dec  6 08:00:00 gpu-7 kernel: [    0.000000] Linux version 6.8.0-51-generic (buildd@lcy02-amd64-080) (x86_64-linux-gnu-gcc-13) #52-Ubuntu SMP
Dec  6 08:00:05 gpu-7 kernel: [    5.120000] nvidia: loading out-of-tree module taints kernel.
Dec  6 09:12:01 gpu-7 kernel: [ 4321.345678] NVRM: Xid (PCI:0000:07:00): 13, pid=4410, name=python3, Graphics Exception: ESR 0x405840=0x4d000000 0x405844=0x0
Dec  6 09:12:02 gpu-7 kernel: [ 4322.000001] NVRM: Xid (PCI:0000:07:00): 13, pid=4410, name=python3, Graphics Exception: ESR 0x405840=0x4d000000 0x405844=0x0
`
	dbe    = "Dec  6 09:40:00 gpu-7 kernel: [ 6000.2] NVRM: Xid (PCI:0000:08:00): 48, pid='<unknown>', name=<unknown>, An uncorrectable double bit error (DBE) has been detected on GPU in the framebuffer at partition 6, subpartition 0.\n"
	offBus = "Dec  6 10:00:00 gpu-7 kernel: [ 7000.1] NVRM: GPU at PCI:0000:08:00: GPU-2b7a1c3e-8f1d-4a8e-9b0c-1d2e3f4a5b6c\nDec  6 10:00:00 gpu-7 kernel: [ 7000.2] NVRM: GPU at PCI:0000:08:00: GPU has fallen off the bus.\n"
)

func TestCheckXID(t *testing.T) {
	for _, tc := range []struct {
		name, file, log string
		want            rep.Status
		xids            int
		says            []string
	}{
		{"an earlier boot's XID does not count", "/var/log/kern.log", lastBoot + thisBoot, rep.OK, 2,
			[]string{"2 XIDs (13 ×2) since boot (/var/log/kern.log)", "XID 13 on 0000:07:00"}},
		{"a double-bit ECC error calls for a GPU reset", "/var/log/kern.log", lastBoot + thisBoot + dbe, rep.Warn, 3,
			[]string{"XID 48 on 0000:08:00: double-bit ECC error", "nvidia-smi -r -i 0000:08:00"}},
		{"a GPU fallen off the bus without an XID is serviced", "/var/log/messages", thisBoot + offBus, rep.Fail, 3,
			[]string{"fallen off the bus on 0000:08:00", "have it serviced"}},
		{"no XID", "/var/log/kern.log", lastBoot + thisBoot[:strings.Index(thisBoot, "Dec  6 09")], rep.OK, 0, []string{"no XID since boot (/var/log/kern.log)"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			root := fakeRoot(t, "ubuntu2404-containerd2", 2)
			write(t, root, tc.file, tc.log)
			r := checkRoot(t, root)
			check(t, r, rep.CheckXID, tc.want, tc.says...)
			if len(r.XIDs) != tc.xids {
				t.Errorf("%d XIDs in the report, want %d: %+v", len(r.XIDs), tc.xids, r.XIDs)
			}
		})
	}
	r := checkRoot(t, fakeRoot(t, "ubuntu2404-containerd2", 2))
	check(t, r, rep.CheckXID, rep.Skipped, "kernel log not readable")
}

// TestReadKmsgDoesNotWait: the kernel's ring buffer is read to its end without waiting for
// new records (a blocking read would hang the agent). Needs a device node, which only root
// can make.
func TestReadKmsgDoesNotWait(t *testing.T) {
	root := t.TempDir()
	if err := os.MkdirAll(filepath.Join(root, "dev"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mknod(filepath.Join(root, "dev/kmsg"), unix.S_IFCHR|0o400, int(unix.Mkdev(1, 11))); err != nil {
		t.Skipf("cannot make a /dev/kmsg device node here (%v): the ring-buffer read is not tested", err)
	}
	h := &Host{Root: root}
	text, ok := h.readKmsg()
	if !ok {
		t.Skip("/dev/kmsg is not readable here (a container without CAP_SYSLOG or the device): the ring-buffer read is not tested")
	}
	if text == "" || strings.Contains(text, ",-;") {
		t.Errorf("want the records' messages without their prefixes, got %.200q", text)
	}
}

func TestCheckDriverLibrariesAndKernels(t *testing.T) {
	const lib = "/usr/lib/x86_64-linux-gnu/libnvidia-ml.so."
	for _, tc := range []struct {
		name  string
		files []string
		id    string
		want  rep.Status
		says  []string
	}{
		{"libraries match the module", []string{lib + "570.86.15"}, rep.CheckDriverLibraries, rep.OK, []string{"both 570.86.15"}},
		{"upgraded without a reboot", []string{lib + "570.133.20"}, rep.CheckDriverLibraries, rep.Fail, []string{"mismatch: module 570.86.15 loaded, libraries 570.133.20", "reboot"}},
		{"an old driver's libraries left", []string{lib + "570.86.15", lib + "550.127.08"}, rep.CheckDriverLibraries, rep.Warn, []string{"several drivers"}},
		{"a newer kernel without the module",
			[]string{"/lib/modules/6.8.0-51-generic/updates/dkms/nvidia.ko.zst", "/lib/modules/6.8.0-100-generic/kernel/fs/overlayfs/overlay.ko.zst", "/lib/modules/6.8.0-45-generic/kernel/fs/overlayfs/overlay.ko.zst"},
			rep.CheckDriverKernels, rep.Warn, []string{"kernel 6.8.0-100-generic is installed without the NVIDIA module", "linux-modules-nvidia-BRANCH-server-6.8.0-100-generic"}},
		{"every newer kernel has it",
			[]string{"/lib/modules/6.8.0-51-generic/kernel/nvidia-570srv/nvidia.ko", "/lib/modules/6.8.0-60-generic/kernel/nvidia-570srv/nvidia.ko"},
			rep.CheckDriverKernels, rep.OK, nil},
		{"the operator's driver: no module on the host", []string{"/lib/modules/6.8.0-60-generic/kernel/fs/overlayfs/overlay.ko.zst"}, rep.CheckDriverKernels, rep.Skipped, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			root := fakeRoot(t, "ubuntu2404-containerd2", 2)
			for _, f := range tc.files {
				write(t, root, f, "")
			}
			check(t, checkRoot(t, root), tc.id, tc.want, tc.says...)
		})
	}
}

// cdiSpec is a spec in the format `nvidia-ctk cdi generate` writes (0.5.0, device names by
// index and by UUID, "all"), for the first n of two GPUs.
func cdiSpecFor(n int) string {
	s := "---\ncdiVersion: 0.5.0\nkind: nvidia.com/gpu\ndevices:\n"
	uuids := []string{"GPU-4cf8db2d-06c0-7d70-1a51-e59b25b2c16c", "GPU-9a3b1e0f-2c4d-4e5f-8a6b-7c8d9e0f1a2b"}
	for i := 0; i < n; i++ {
		for _, name := range []string{`"` + string(rune('0'+i)) + `"`, uuids[i]} {
			s += "    - name: " + name + "\n      containerEdits:\n        deviceNodes:\n            - path: /dev/nvidia" + string(rune('0'+i)) + "\n"
		}
	}
	return s + `    - name: all
      containerEdits:
        deviceNodes:
            - path: /dev/nvidia0
containerEdits:
    env:
        - NVIDIA_VISIBLE_DEVICES=void
    deviceNodes:
        - path: /dev/nvidiactl
        - path: /dev/nvidia-uvm
    hooks:
        - hookName: createContainer
          path: /usr/bin/nvidia-cdi-hook
          args:
            - nvidia-cdi-hook
            - update-ldcache
            - --folder
            - /usr/lib/x86_64-linux-gnu
    mounts:
        - hostPath: /usr/bin/nvidia-smi
          containerPath: /usr/bin/nvidia-smi
          options:
            - ro
            - nosuid
            - nodev
            - bind
`
}

func TestCheckCDI(t *testing.T) {
	for _, tc := range []struct {
		name, file, spec string
		want             rep.Status
		says             []string
	}{
		{"a spec naming every GPU", "/var/run/cdi/nvidia.yaml", cdiSpecFor(2), rep.OK, []string{"names all 2 GPUs"}},
		{"a spec made before a GPU was added", "/etc/cdi/nvidia.yaml", cdiSpecFor(1), rep.Fail, []string{"names 1 of the 2 GPUs", "nvidia-ctk cdi generate"}},
		{"a spec that does not parse", "/var/run/cdi/nvidia.yaml", "cdiVersion: 0.5.0\nkind: nvidia.com/gpu\ndevices: {}\n", rep.Fail, []string{"does not parse", "/var/run/cdi/nvidia.yaml"}},
		{"no spec, CDI on", "", "", rep.Skipped, []string{rep.NoCDISpec, "needs one"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			root := fakeRoot(t, "ubuntu2404-containerd2", 2)
			if tc.file != "" {
				write(t, root, tc.file, tc.spec)
			}
			c := check(t, checkRoot(t, root), rep.CheckCDI, tc.want, tc.says...)
			if strings.Contains(c.Message, root) {
				t.Errorf("the message names the agent's mount of the host: %q", c.Message)
			}
		})
	}
}

// toolkitDropIn configures the nvidia runtime as `nvidia-ctk runtime configure
// --runtime=containerd` does (the toolkit's own engine, drop-in mode): the runtime in
// conf.d/99-nvidia.toml, imported by the root config.
func toolkitDropIn(t *testing.T, root string) {
	t.Helper()
	top := filepath.Join(root, "etc/containerd/config.toml")
	cfg, err := ctkcontainerd.New(ctkcontainerd.WithLogger(quiet{}), ctkcontainerd.WithTopLevelConfigPath(top), ctkcontainerd.WithConfigSource(ctktoml.FromFile(top)),
		// The drop-in directory as the host names it (the tool runs in a container with the host at /host).
		ctkcontainerd.WithContainerPathAsHostPath(filepath.Join(root, "etc/containerd/conf.d"), "/etc/containerd/conf.d"))
	if err != nil {
		t.Fatal(err)
	}
	if err := cfg.AddRuntime("nvidia", NvidiaRuntimeBinary, false); err != nil {
		t.Fatal(err)
	}
	if _, err := cfg.Save(filepath.Join(root, "etc/containerd/conf.d/99-nvidia.toml")); err != nil {
		t.Fatal(err)
	}
}

func TestContainerdAsItLoads(t *testing.T) {
	t.Run("the toolkit's drop-in holds the runtime", func(t *testing.T) {
		root := fakeRoot(t, "ubuntu2404-containerd2", 2)
		toolkitDropIn(t, root)
		r := checkRoot(t, root)
		check(t, r, rep.CheckNvidiaRuntime, rep.OK, "from /etc/containerd/conf.d/99-nvidia.toml")
		check(t, r, rep.CheckSystemdCgroup, rep.OK)
		if !r.NvidiaRuntime {
			t.Error("nvidiaRuntime false with the runtime in an imported drop-in")
		}
	})
	t.Run("an upgrade replaced config.toml and its imports", func(t *testing.T) {
		root := fakeRoot(t, "ubuntu2404-containerd2", 2)
		toolkitDropIn(t, root)
		old, _ := os.ReadFile(filepath.Join(root, "etc/containerd/config.toml"))
		write(t, root, "/etc/containerd/config.toml", strings.Replace(string(old), `imports = ["/etc/containerd/conf.d/*.toml"]`, "", 1))
		check(t, checkRoot(t, root), rep.CheckNvidiaRuntime, rep.Fail,
			"/etc/containerd/conf.d/99-nvidia.toml has it, but /etc/containerd/config.toml does not import it", `imports = ["/etc/containerd/conf.d/*.toml"]`)
	})
	t.Run("an import that is not there", func(t *testing.T) {
		root := fakeRoot(t, "ubuntu2404-containerd2", 2)
		old, _ := os.ReadFile(filepath.Join(root, "etc/containerd/config.toml"))
		write(t, root, "/etc/containerd/config.toml", strings.Replace(string(old), `"/etc/containerd/conf.d/*.toml"`, `"/etc/containerd/conf.d/*.toml", "nvidia.toml"`, 1))
		check(t, checkRoot(t, root), rep.CheckContainerd, rep.Fail, "imports /etc/containerd/nvidia.toml, which is not there")
	})
	// A drop-in with only the runtime's table (as older guides write it) replaces the whole CRI
	// section under containerd 1.x, taking runc's SystemdCgroup with it; 2.0 merges it key by
	// key (commit a21e379b6, first in v2.0.0: the conformance test loads it with the real 2.0).
	handMade := "version = 2\n[plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.nvidia]\n  runtime_type = \"io.containerd.runc.v2\"\n  [plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.nvidia.options]\n    BinaryName = \"/usr/bin/nvidia-container-runtime\"\n"
	for _, tc := range []struct {
		containerd string
		want       rep.Status
		says       []string
	}{
		{"1.7.24-1", rep.Fail, []string{"but /etc/containerd/conf.d/nvidia.toml overrides it: containerd 1.7.24 (1.x) replaces a plugin's whole section"}},
		{"2.0.5-1", rep.OK, nil},
		{"2.1.4-1", rep.OK, nil},
	} {
		t.Run("a hand-made drop-in under containerd "+tc.containerd, func(t *testing.T) {
			root := fakeRoot(t, "ubuntu2204-kubeadm", 2)
			old, _ := os.ReadFile(filepath.Join(root, "etc/containerd/config.toml"))
			cfg := strings.Replace(string(old), "imports = []", `imports = ["/etc/containerd/conf.d/*.toml"]`, 1)
			cfg = strings.Replace(cfg, "SystemdCgroup = false", "SystemdCgroup = true", 1)
			write(t, root, "/etc/containerd/config.toml", cfg)
			write(t, root, "/etc/containerd/conf.d/nvidia.toml", handMade)
			write(t, root, NvidiaRuntimeBinary, "")
			status, _ := os.ReadFile(filepath.Join(root, "var/lib/dpkg/status"))
			write(t, root, "/var/lib/dpkg/status", string(status)+"\nPackage: containerd.io\nStatus: install ok installed\nVersion: "+tc.containerd+"\n")
			r := checkRoot(t, root)
			check(t, r, rep.CheckSystemdCgroup, tc.want, tc.says...)
			check(t, r, rep.CheckNvidiaRuntime, rep.OK)
		})
	}
}

// TestKubeletPlugins: the NVIDIA plugins' sockets in the kubelet's directories are listed
// (device plugins, DRA registrations); others are not.
func TestKubeletPlugins(t *testing.T) {
	root := fakeRoot(t, "k3s", 1)
	for _, f := range []string{"/var/lib/kubelet/device-plugins/kubelet.sock", "/var/lib/kubelet/device-plugins/nvidia-gpu.sock",
		"/var/lib/kubelet/plugins_registry/gpu.nvidia.com-reg.sock", "/var/lib/kubelet/plugins_registry/ebs.csi.aws.com-reg.sock"} {
		write(t, root, f, "")
	}
	r := checkRoot(t, root)
	check(t, r, rep.CheckKubeletPlugins, rep.OK, "nvidia-gpu.sock", "gpu.nvidia.com-reg.sock")
	if strings.Join(r.KubeletPlugins, " ") != "/var/lib/kubelet/device-plugins/nvidia-gpu.sock /var/lib/kubelet/plugins_registry/gpu.nvidia.com-reg.sock" {
		t.Errorf("kubeletPlugins %q", r.KubeletPlugins)
	}
	other := fakeRoot(t, "k3s", 1)
	write(t, other, "/var/lib/kubelet/device-plugins/kubelet.sock", "")
	check(t, checkRoot(t, other), rep.CheckKubeletPlugins, rep.OK, "no NVIDIA plugin registered")
	check(t, checkRoot(t, fakeRoot(t, "k3s", 1)), rep.CheckKubeletPlugins, rep.Skipped, "a kubelet with another root directory?")
}

// TestFabricManager: NVSwitches on the PCI bus (class 0x068000, as nvpci reads them) need
// Fabric Manager running (a process in the host's /proc).
func TestFabricManager(t *testing.T) {
	withSwitches := func(t *testing.T) string {
		root := fakeRoot(t, "ubuntu2404-containerd2", 2)
		for i := 0; i < 2; i++ {
			dir := filepath.Join("/sys/bus/pci/devices", fmt.Sprintf("0000:%02x:00.0", 0xc4+i))
			for _, f := range []string{"vendor", "device", "subsystem_vendor", "subsystem_device", "numa_node"} {
				b, _ := os.ReadFile(filepath.Join(root, "sys/bus/pci/devices/0000:07:00.0", f))
				write(t, root, filepath.Join(dir, f), string(b))
			}
			write(t, root, filepath.Join(dir, "class"), "0x068000")
			write(t, root, filepath.Join(dir, "device"), "0x1af1")
			if b, err := os.ReadFile(filepath.Join(root, "sys/bus/pci/devices/0000:07:00.0", "config")); err == nil {
				write(t, root, filepath.Join(dir, "config"), string(b))
			}
			if b, err := os.ReadFile(filepath.Join(root, "sys/bus/pci/devices/0000:07:00.0", "resource")); err == nil {
				write(t, root, filepath.Join(dir, "resource"), string(b))
			}
		}
		return root
	}
	root := withSwitches(t)
	r := checkRoot(t, root)
	check(t, r, rep.CheckFabricManager, rep.Fail, "2 NVSwitches on the PCI bus and no Fabric Manager running", "nvidia-fabricmanager")
	if len(r.GPUs) != 2 {
		t.Errorf("the NVSwitches counted as GPUs: %+v", r.GPUs)
	}
	write(t, root, "/proc/4242/comm", "nv-fabricmanager\n")
	check(t, checkRoot(t, root), rep.CheckFabricManager, rep.OK, "2 NVSwitches, Fabric Manager running")
	check(t, checkRoot(t, fakeRoot(t, "ubuntu2404-containerd2", 2)), rep.CheckFabricManager, rep.Skipped, "no NVSwitch")
}

// TestTemplateDrift: RKE2 renders containerd's config from its template when it starts — a
// template edited since is not in effect yet; a static template (not built on the base) without
// the nvidia runtime loses it at the next start.
func TestTemplateDrift(t *testing.T) {
	const dir = "/var/lib/rancher/k3s/agent/etc/containerd/"
	root := fakeRoot(t, "k3s", 1)
	cfg, err := os.ReadFile(filepath.Join(root, dir, "config.toml"))
	if err != nil {
		t.Fatal(err)
	}
	// A static template: the rendered file without its nvidia runtime's tables.
	var static []string
	skip := false
	for _, l := range strings.Split(string(cfg), "\n") {
		if strings.HasPrefix(strings.TrimSpace(l), "[") {
			skip = strings.Contains(l, "nvidia")
		}
		if !skip && !strings.Contains(l, "nvidia") {
			static = append(static, l)
		}
	}
	tmpl := filepath.Join(root, dir, "config.toml.tmpl")
	write(t, root, dir+"config.toml.tmpl", strings.Join(static, "\n"))
	old := time.Now().Add(-time.Hour)
	if err := os.Chtimes(tmpl, old, old); err != nil {
		t.Fatal(err)
	}
	r := checkRoot(t, root)
	check(t, r, rep.CheckNvidiaRuntime, rep.Warn, `does not build on {{ template "base" . }} and has no nvidia runtime: the next restart of k3s renders config.toml without it`)
	check(t, r, rep.CheckContainerd, rep.OK, "template "+dir+"config.toml.tmpl")

	// Built on the base: the runtime comes back at every start; edited after the last start.
	write(t, root, dir+"config.toml.tmpl", "{{ template \"base\" . }}\n[plugins.\"io.containerd.grpc.v1.cri\".registry]\n  config_path = \"/etc/containerd/certs.d\"\n")
	future := time.Now().Add(time.Hour)
	if err := os.Chtimes(tmpl, future, future); err != nil {
		t.Fatal(err)
	}
	r = checkRoot(t, root)
	check(t, r, rep.CheckNvidiaRuntime, rep.OK)
	check(t, r, rep.CheckContainerd, rep.Warn, "edited after k3s last rendered", "restart k3s")
}
