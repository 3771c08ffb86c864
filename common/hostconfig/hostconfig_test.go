package hostconfig

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/kubectl-gpu/kubectl-gpu/common/golden"
	"github.com/kubectl-gpu/kubectl-gpu/common/hostconfig/hostconfigtest"
	rep "github.com/kubectl-gpu/kubectl-gpu/common/nodereport"
)

// fakeRoot builds a fake host root with gpus A100s (see package hostconfigtest).
func fakeRoot(t testing.TB, name string, gpus int) string {
	t.Helper()
	dst := filepath.Join(t.TempDir(), name)
	if err := hostconfigtest.Build(name, dst, gpus); err != nil {
		t.Fatal(err)
	}
	return dst
}

var roots = hostconfigtest.Names

func checkRoot(t *testing.T, root string) *rep.Report {
	r := rep.New("v0.0.0-test", ModeCheck)
	Check(context.Background(), &Host{Root: root}, r, nil)
	return r
}

// TestCheckGolden: the report of each fake host root, as a golden file.
func TestCheckGolden(t *testing.T) {
	for _, name := range roots {
		t.Run(name, func(t *testing.T) {
			r := checkRoot(t, fakeRoot(t, name, 2))
			b, _ := json.MarshalIndent(r, "", "  ")
			golden.Assert(t, "check-"+name+".golden", append(b, '\n'))
		})
	}
}

func status(r *rep.Report, id string) rep.Status {
	c, _ := r.Get(id)
	return c.Status
}

func TestCheckFindings(t *testing.T) {
	u := checkRoot(t, fakeRoot(t, "ubuntu2204-kubeadm", 2))
	for id, want := range map[string]rep.Status{
		rep.CheckPCI: rep.OK, rep.CheckNouveau: rep.Fail, rep.CheckSwap: rep.Fail, rep.CheckModules: rep.Fail,
		rep.CheckSysctl: rep.Fail, rep.CheckSystemdCgroup: rep.Fail, rep.CheckDriver: rep.Warn,
	} {
		if got := status(u, id); got != want {
			t.Errorf("ubuntu2204 %s = %s, want %s", id, got, want)
		}
	}
	if len(u.GPUs) != 2 || u.Flavour != rep.FlavourKubeadm || u.ContainerdConfigVersion != 2 {
		t.Errorf("ubuntu2204: %d GPUs, flavour %s, config v%d", len(u.GPUs), u.Flavour, u.ContainerdConfigVersion)
	}
	n := checkRoot(t, fakeRoot(t, "ubuntu2404-containerd2", 1))
	if n.ContainerdConfigVersion != 3 || n.DriverVersion != "570.86.15" || n.ToolkitVersion != "1.17.4-1" || status(n, rep.CheckNvidiaRuntime) != rep.Fail || status(n, rep.CheckSystemdCgroup) != rep.OK {
		t.Errorf("ubuntu2404: %+v", n)
	}
	k := checkRoot(t, fakeRoot(t, "k3s", 1))
	if !k.Ready() || !k.NvidiaRuntime || k.Flavour != rep.FlavourK3s {
		t.Errorf("k3s should be ready: %+v", k.Checks)
	}
	rh := checkRoot(t, fakeRoot(t, "rhel9", 1))
	if status(rh, rep.CheckSecureBoot) != rep.Warn || status(rh, rep.CheckHeaders) != rep.Warn || !strings.HasPrefix(rh.OS, "Red Hat Enterprise Linux 9.4") {
		t.Errorf("rhel9: %+v", rh.Checks)
	}
	none := checkRoot(t, fakeRoot(t, "rhel9", 0))
	if status(none, rep.CheckPCI) != rep.Fail {
		t.Error("a host without NVIDIA PCI devices must fail gpu.pci")
	}
}

// tree returns every file under root with its content, for comparing before and after.
func tree(t *testing.T, root string) map[string]string {
	m := map[string]string{}
	_ = filepath.WalkDir(root, func(p string, d os.DirEntry, err error) error {
		if err == nil && d.Type().IsRegular() {
			b, _ := os.ReadFile(p)
			rel, _ := filepath.Rel(root, p)
			m[rel] = string(b)
		}
		return nil
	})
	return m
}

func TestApplyKubeadm(t *testing.T) {
	root := fakeRoot(t, "ubuntu2204-kubeadm", 1)
	h := &Host{Root: root}
	rec := &Recorder{}
	now := time.Date(2026, 11, 22, 8, 0, 0, 0, time.UTC)
	r, err := Run(context.Background(), h, Options{Mode: ModeApply, AgentVersion: "test", Runner: rec, Apply: ApplyOptions{Now: now, RestartRuntime: true}})
	if err != nil {
		t.Fatal(err)
	}
	var files []string
	for _, c := range r.Changes {
		if c.File != "" {
			files = append(files, c.File)
			if !c.Done || c.Diff == "" {
				t.Errorf("change %+v", c)
			}
		}
	}
	want := "/etc/containerd/config.toml /etc/fstab /etc/modprobe.d/blacklist-nouveau.conf /etc/modules-load.d/kubectl-gpu.conf /etc/sysctl.d/99-kubectl-gpu.conf"
	if strings.Join(files, " ") != want {
		t.Fatalf("files changed: %s\nwant %s", strings.Join(files, " "), want)
	}
	var cmds []string
	for _, c := range rec.Commands {
		cmds = append(cmds, strings.Join(c, " "))
	}
	if strings.Join(cmds, "; ") != "modprobe -a br_netfilter; sysctl --system; swapoff -a; update-initramfs -u; systemctl restart containerd" {
		t.Fatalf("commands: %q", cmds)
	}
	for _, f := range files {
		b, _ := os.ReadFile(h.Path(f))
		golden.Assert(t, "apply-ubuntu2204"+strings.ReplaceAll(f, "/", "_")+".golden", b)
	}
	// Backups of the files that existed.
	for _, f := range []string{"/etc/fstab", "/etc/containerd/config.toml"} {
		if _, err := os.Stat(h.Path(f) + ".kubectl-gpu-20261122T080000.bak"); err != nil {
			t.Errorf("no backup of %s: %v", f, err)
		}
	}
	cfg, err := ParseContainerd(mustRead(t, h.Path("/etc/containerd/config.toml")))
	if err != nil {
		t.Fatal(err)
	}
	if v, _ := cfg.SystemdCgroup(); !v {
		t.Fatal("SystemdCgroup not set")
	}
	// The re-check after apply marks what the files fixed (live settings need the real
	// commands: the recorder ran none, so the swap and module checks still fail here).
	if status(r, rep.CheckSystemdCgroup) != rep.Fixed {
		t.Errorf("systemd cgroup after apply: %s", status(r, rep.CheckSystemdCgroup))
	}

	// A second apply changes no file.
	before := tree(t, root)
	rec2 := &Recorder{}
	r2, err := Run(context.Background(), h, Options{Mode: ModeApply, AgentVersion: "test", Runner: rec2, Apply: ApplyOptions{Now: now.Add(time.Hour)}})
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range r2.Changes {
		if c.File != "" {
			t.Errorf("second apply changed %s:\n%s", c.File, c.Diff)
		}
	}
	after := tree(t, root)
	if len(before) != len(after) {
		t.Errorf("second apply added files: %d → %d", len(before), len(after))
	}
	for k, v := range before {
		if after[k] != v {
			t.Errorf("second apply changed %s", k)
		}
	}
}

func TestApplyRKE2NeverEditsRenderedConfig(t *testing.T) {
	root := fakeRoot(t, "rke2", 1)
	h := &Host{Root: root}
	rendered := mustRead(t, h.Path("/var/lib/rancher/rke2/agent/etc/containerd/config.toml"))
	rec := &Recorder{}
	r, err := Run(context.Background(), h, Options{Mode: ModePlan, AgentVersion: "test", Runner: rec})
	if err != nil {
		t.Fatal(err)
	}
	if len(r.Changes) != 1 || strings.Join(r.Changes[0].Command, " ") != "systemctl restart rke2-server" || !strings.Contains(r.Changes[0].Note, "--restart-runtime") {
		t.Fatalf("plan: %+v", r.Changes)
	}
	if _, err := Run(context.Background(), h, Options{Mode: ModeApply, AgentVersion: "test", Runner: rec, Apply: ApplyOptions{RestartRuntime: true}}); err != nil {
		t.Fatal(err)
	}
	if got := mustRead(t, h.Path("/var/lib/rancher/rke2/agent/etc/containerd/config.toml")); got != rendered {
		t.Fatal("the rendered config was edited")
	}
	if len(rec.Commands) != 1 || rec.Commands[0][2] != "rke2-server" {
		t.Fatalf("commands %v", rec.Commands)
	}
}

func TestApplyAddsNvidiaRuntimeV3(t *testing.T) {
	root := fakeRoot(t, "ubuntu2404-containerd2", 1)
	h := &Host{Root: root}
	r, err := Run(context.Background(), h, Options{Mode: ModeApply, AgentVersion: "test", Runner: &Recorder{}})
	if err != nil {
		t.Fatal(err)
	}
	if status(r, rep.CheckNvidiaRuntime) != rep.Fixed || !r.NvidiaRuntime {
		t.Fatalf("nvidia runtime after apply: %s", status(r, rep.CheckNvidiaRuntime))
	}
	golden.Assert(t, "apply-ubuntu2404_containerd.golden", []byte(mustRead(t, h.Path("/etc/containerd/config.toml"))))
}

func TestNeverWritesUnparseableConfig(t *testing.T) {
	root := fakeRoot(t, "ubuntu2204-kubeadm", 1)
	h := &Host{Root: root}
	bad := "version = 2\n[plugins.\"io.containerd.grpc.v1.cri\"\n  broken = \n"
	if err := os.WriteFile(h.Path("/etc/containerd/config.toml"), []byte(bad), 0o644); err != nil {
		t.Fatal(err)
	}
	r, err := Run(context.Background(), h, Options{Mode: ModeApply, AgentVersion: "test", Runner: &Recorder{}})
	if err != nil {
		t.Fatal(err)
	}
	if got := mustRead(t, h.Path("/etc/containerd/config.toml")); got != bad {
		t.Fatal("an unparseable config was overwritten")
	}
	if c, _ := r.Get(rep.CheckContainerd); c.Status != rep.Fail || !strings.Contains(c.Message, "does not parse") {
		t.Fatalf("check: %+v", c)
	}
}

// TestCrashBetweenTempWriteAndRename: a crash after the temporary file is written leaves
// the old file whole.
func TestCrashBetweenTempWriteAndRename(t *testing.T) {
	root := fakeRoot(t, "ubuntu2204-kubeadm", 1)
	h := &Host{Root: root}
	old := mustRead(t, h.Path("/etc/fstab"))
	fault = func(step, _ string) error {
		if step == StepStaged {
			return errors.New("simulated crash")
		}
		return nil
	}
	defer func() { fault = nil }()
	_, err := Run(context.Background(), h, Options{Mode: ModeApply, AgentVersion: "test", Runner: &Recorder{}})
	if err == nil || !strings.Contains(err.Error(), "simulated crash") {
		t.Fatalf("err %v", err)
	}
	if got := mustRead(t, h.Path("/etc/fstab")); got != old {
		t.Fatal("fstab changed")
	}
	if got := mustRead(t, h.Path("/etc/containerd/config.toml")); !strings.Contains(got, "SystemdCgroup = false") {
		t.Fatal("containerd config changed")
	}
	left, _ := filepath.Glob(h.Path("/etc/*.tmp-*"))
	if len(left) != 0 {
		t.Fatalf("temporary files left: %v", left)
	}
}

func mustRead(t *testing.T, p string) string {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// FuzzContainerdEdit: whatever the input, the edit apply uses never panics, and what it
// returns parses and has the nvidia runtime; or it refuses, saying why (then nothing is
// written). Found: NVIDIA's TOML reader takes [""0], which its writer turns into a table
// header no reader takes; "plugins = 0" made the edit put the runtime in a table containerd
// never reads (both refused since).
func FuzzContainerdEdit(f *testing.F) {
	for _, name := range roots {
		for _, p := range []string{"etc/containerd/config.toml", "var/lib/rancher/rke2/agent/etc/containerd/config.toml", "var/lib/rancher/k3s/agent/etc/containerd/config.toml"} {
			if b, err := os.ReadFile(filepath.Join("testdata", "roots", name, p)); err == nil {
				f.Add(string(b))
			}
		}
	}
	f.Add("")
	f.Add("version = 3\n")
	f.Add("version = \"x\"\n")
	f.Fuzz(func(t *testing.T, in string) {
		out, _, err := EditContainerd(in, true, true, true)
		if err != nil {
			// Refused (the input, or what the edit makes of it, does not parse): apply
			// writes nothing.
			if !strings.Contains(err.Error(), "not touched") && !strings.Contains(err.Error(), "not written") {
				t.Fatalf("refused without saying why: %v", err)
			}
			return
		}
		again, err := ParseContainerd(out)
		if err != nil {
			t.Fatalf("edited config does not parse: %v\ninput:\n%s\noutput:\n%s", err, in, out)
		}
		if b, ok := again.RuntimeBinary("nvidia"); !ok || b != NvidiaRuntimeBinary {
			t.Fatalf("nvidia runtime lost:\n%s", out)
		}
	})
}

// TestCgroupfsKubeletWithCgroupfsRunc: a kubelet on cgroupfs with runc's SystemdCgroup off
// is consistent (hosts without systemd as init): reported ok, and apply leaves it alone.
func TestCgroupfsKubeletWithCgroupfsRunc(t *testing.T) {
	root := fakeRoot(t, "ubuntu2204-kubeadm", 1)
	h := &Host{Root: root}
	if err := os.WriteFile(h.Path(KubeletFile), []byte("apiVersion: kubelet.config.k8s.io/v1beta1\nkind: KubeletConfiguration\ncgroupDriver: cgroupfs\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if c, _ := checkRoot(t, root).Get(rep.CheckSystemdCgroup); c.Status != rep.OK || !strings.Contains(c.Message, "cgroupfs") {
		t.Fatalf("check: %+v", c)
	}
	if _, err := Run(context.Background(), h, Options{Mode: ModeApply, AgentVersion: "test", Runner: &Recorder{}}); err != nil {
		t.Fatal(err)
	}
	if got := mustRead(t, h.Path("/etc/containerd/config.toml")); strings.Contains(got, "SystemdCgroup = true") {
		t.Fatal("apply switched runc to the systemd cgroup driver under a cgroupfs kubelet")
	}
}

// TestRKE2K3sLiveValuesSuffice: RKE2 and K3s load overlay and br_netfilter and set the
// forwarding sysctls every time they start (pkg/agent/syssetup): with the live values right
// and nothing under /etc/modules-load.d or /etc/sysctl.d the checks pass and apply writes
// neither file. With a live value wrong, it is a failure again and apply fixes it.
func TestRKE2K3sLiveValuesSuffice(t *testing.T) {
	for _, name := range []string{"rke2", "k3s"} {
		t.Run(name, func(t *testing.T) {
			root := fakeRoot(t, name, 1)
			for _, d := range []string{"/etc/modules-load.d", "/etc/sysctl.d"} {
				if err := os.RemoveAll(filepath.Join(root, d)); err != nil {
					t.Fatal(err)
				}
			}
			h := &Host{Root: root}
			r, err := Run(context.Background(), h, Options{Mode: ModeCheck, AgentVersion: "test"})
			if err != nil {
				t.Fatal(err)
			}
			if status(r, rep.CheckModules) != rep.OK || status(r, rep.CheckSysctl) != rep.OK {
				t.Fatalf("modules %s, sysctl %s: the distribution persists them", status(r, rep.CheckModules), status(r, rep.CheckSysctl))
			}
			if _, err := Run(context.Background(), h, Options{Mode: ModeApply, AgentVersion: "test", Runner: &Recorder{}}); err != nil {
				t.Fatal(err)
			}
			for _, f := range []string{ModulesFile, SysctlFile} {
				if h.Exists(f) {
					t.Errorf("apply wrote %s on %s", f, name)
				}
			}
			// ip_forward off right now: a failure, fixed by apply.
			if err := os.WriteFile(h.Path("/proc/sys/net/ipv4/ip_forward"), []byte("0\n"), 0o644); err != nil {
				t.Fatal(err)
			}
			r, _ = Run(context.Background(), h, Options{Mode: ModeCheck, AgentVersion: "test"})
			if c, _ := r.Get(rep.CheckSysctl); c.Status != rep.Fail || !strings.Contains(c.Message, "net.ipv4.ip_forward=0") || strings.Contains(c.Message, "not persisted") {
				t.Fatalf("live value wrong: %+v", c)
			}
		})
	}
}

// A host whose nouveau is blacklisted already yet still loaded (blacklisted by hand, no
// reboot since) has nothing to change, and still needs its reboot: the plan says so, so
// prep's roll takes it.
// TestInitramfsRebuild: blacklisting nouveau rebuilds the initramfs with the host's own tool
// (most distributions load nouveau from it before the root's modprobe.d is read), and a host
// with none is told to do it by hand; the apply runs it after the blacklist is written.
// Simulated: the roots' update-initramfs and dracut are stand-ins (their presence is what is
// read) and the Recorder records the command instead of running it; the blacklist file is
// really written into the fake root.
func TestInitramfsRebuild(t *testing.T) {
	for _, tc := range []struct {
		root, remove, want string
	}{
		{"ubuntu2204-kubeadm", "", "update-initramfs -u"},
		{"rhel9", "", "dracut -f"},
		{"ubuntu2204-kubeadm", "/usr/sbin/update-initramfs", "not run: the host has no update-initramfs or dracut"},
	} {
		h := &Host{Root: fakeRoot(t, tc.root, 1)}
		if tc.remove != "" {
			if err := os.Remove(h.Path(tc.remove)); err != nil {
				t.Fatal(err)
			}
		}
		if err := os.WriteFile(h.Path("/proc/modules"), []byte("nouveau 2433024 0 - Live 0x0000000000000000\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		rec := &Recorder{}
		r, err := Run(context.Background(), h, Options{Mode: ModeApply, AgentVersion: "test", Runner: rec})
		if err != nil {
			t.Fatalf("%s: %v", tc.root, err)
		}
		var got []string
		for _, c := range r.Changes {
			if c.Check == rep.CheckNouveau && c.File == "" {
				got = append(got, strings.Join(c.Command, " ")+c.Note)
			}
		}
		if len(got) != 1 || !strings.HasPrefix(got[0], tc.want) {
			t.Errorf("%s without %q: %q, want %q", tc.root, tc.remove, got, tc.want)
		}
		// The reboot's reason says how the initramfs was left: rebuilt, or by hand.
		reason := "the initramfs rebuilt (" + tc.want + ")"
		if strings.HasPrefix(tc.want, "not run") {
			reason = "rebuild the initramfs by hand"
		}
		if !strings.HasPrefix(r.Reboot, "nouveau blacklisted") || !strings.Contains(r.Reboot, reason) {
			t.Errorf("%s without %q: reboot %q, want %q in it", tc.root, tc.remove, r.Reboot, reason)
		}
		ran := false
		for _, c := range rec.Commands {
			ran = ran || strings.Join(c, " ") == tc.want
		}
		if !h.Exists(NouveauFile) || ran != !strings.HasPrefix(tc.want, "not run") {
			t.Errorf("%s: blacklist written %v, ran %v: %q", tc.root, h.Exists(NouveauFile), ran, rec.Commands)
		}
	}
}

func TestNouveauBlacklistedStillLoaded(t *testing.T) {
	root := fakeRoot(t, "ubuntu2204-kubeadm", 1)
	h := &Host{Root: root}
	if err := os.MkdirAll(h.Path("/etc/modprobe.d"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(h.Path(NouveauFile), []byte("blacklist nouveau\noptions nouveau modeset=0\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	r, err := Run(context.Background(), h, Options{Mode: ModePlan, AgentVersion: "test", Runner: &Recorder{}})
	if err != nil {
		t.Fatal(err)
	}
	// The blacklist is not written again; the initramfs, which still loads nouveau before the
	// root's modprobe.d is read, is rebuilt.
	var nouveau []string
	for _, c := range r.Changes {
		if c.Check == rep.CheckNouveau {
			nouveau = append(nouveau, c.File+strings.Join(c.Command, " "))
		}
	}
	if strings.Join(nouveau, "; ") != "update-initramfs -u" {
		t.Errorf("nouveau changes %q, want only the initramfs rebuilt", nouveau)
	}
	if !strings.Contains(r.Reboot, "blacklisted but still loaded, the initramfs rebuilt (update-initramfs -u)") {
		t.Errorf("reboot %q, want it planned for nouveau still loaded", r.Reboot)
	}
	// Not loaded any more (after the reboot): no reboot.
	if err := os.WriteFile(h.Path("/proc/modules"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if r, err = Run(context.Background(), h, Options{Mode: ModePlan, AgentVersion: "test", Runner: &Recorder{}}); err != nil || r.Reboot != "" {
		t.Errorf("nouveau unloaded: reboot %q, %v; want none", r.Reboot, err)
	}
}

// A driver package installed on a host whose kernel loaded no driver (a module that did not
// load, or the reboot not done yet) is said, with the version the package manager has.
func TestDriverInstalledNotLoaded(t *testing.T) {
	root := fakeRoot(t, "ubuntu2204-kubeadm", 1)
	h := &Host{Root: root}
	st, _ := h.Read("/var/lib/dpkg/status")
	st += "\nPackage: nvidia-headless-no-dkms-580-server\nStatus: install ok installed\nVersion: 580.95.05-0ubuntu0.22.04.1\n\nPackage: nvidia-container-toolkit\nStatus: install ok installed\nVersion: 1.17.8-1\n"
	if err := os.MkdirAll(h.Path("/var/lib/dpkg"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(h.Path("/var/lib/dpkg/status"), []byte(st), 0o644); err != nil {
		t.Fatal(err)
	}
	r := checkRoot(t, root)
	c, _ := r.Get(rep.CheckDriver)
	if r.DriverPackage != "580.95.05" || r.DriverVersion != "" || c.Status != rep.Warn || !strings.Contains(c.Message, "though driver 580.95.05 is installed: its kernel module did not load") {
		t.Errorf("driver package %q, loaded %q, check %+v", r.DriverPackage, r.DriverVersion, c)
	}
}
