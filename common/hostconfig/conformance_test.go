package hostconfig

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"sort"
	"strings"
	"testing"

	ctkcontainerd "github.com/NVIDIA/nvidia-container-toolkit/pkg/config/engine/containerd"
	ctktoml "github.com/NVIDIA/nvidia-container-toolkit/pkg/config/toml"

	"github.com/kubectl-gpu/kubectl-gpu/common/hostconfig/hostconfigtest"
	rep "github.com/kubectl-gpu/kubectl-gpu/common/nodereport"
)

// The containerd conformance test: every containerd fixture is loaded by each real
// containerd the test environment builds (hack/testenv/build-tools.sh containerd, the
// versions pinned in hack/testenv/versions.sh) and by the tool's model of that release; their
// verdicts (loads, nvidia runtime, runc's SystemdCgroup) must agree. Then prep's check and
// apply run on the fixture with that containerd as the host's: an apply never leaves a
// configuration the real containerd refuses.

// pinnedContainerd reads the containerd versions build-tools.sh builds.
func pinnedContainerd(t *testing.T) []string {
	_, file, _, _ := runtime.Caller(0)
	b, err := os.ReadFile(filepath.Join(filepath.Dir(file), "..", "..", "hack", "testenv", "versions.sh"))
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`CONTAINERD_VERSIONS:-"([^"]+)"`).FindSubmatch(b)
	if m == nil {
		t.Fatal("versions.sh pins no CONTAINERD_VERSIONS")
	}
	if v := os.Getenv("CONTAINERD_VERSIONS"); v != "" {
		return strings.Fields(v)
	}
	return strings.Fields(string(m[1]))
}

// containerdBins returns the built containerd of each pinned version, or skips (fails
// under KGPU_REQUIRE_E2E=1, as make test sets) when they are not built or chroot is not
// allowed.
func containerdBins(t *testing.T) map[string]string {
	t.Helper()
	need := func(why string) {
		if os.Getenv("KGPU_REQUIRE_E2E") == "1" {
			t.Fatal(why)
		}
		t.Skip(why)
	}
	if os.Geteuid() != 0 {
		need("the containerd conformance test runs containerd in fake host roots with chroot, which needs root")
	}
	out := map[string]string{}
	for _, v := range pinnedContainerd(t) {
		b := hostconfigtest.ContainerdBin(v)
		if b == "" {
			need("containerd " + v + " is not built: hack/testenv/build-tools.sh containerd (make tools) builds it")
		}
		out[v] = b
	}
	return out
}

// A containerd fixture: a fake host root with its containerd files.
type ctrFixture struct {
	name  string
	base  string // the fake root it starts from
	build func(t *testing.T, root string)
}

const (
	v2NvidiaOnly = "version = 2\n[plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.nvidia]\n  runtime_type = \"io.containerd.runc.v2\"\n  [plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.nvidia.options]\n    BinaryName = \"/usr/bin/nvidia-container-runtime\"\n"
	v3NvidiaOnly = "version = 3\n[plugins.\"io.containerd.cri.v1.runtime\".containerd.runtimes.nvidia]\n  runtime_type = \"io.containerd.runc.v2\"\n  [plugins.\"io.containerd.cri.v1.runtime\".containerd.runtimes.nvidia.options]\n    BinaryName = \"/usr/bin/nvidia-container-runtime\"\n"
	v2Cgroupfs   = "version = 2\n[plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.runc.options]\n  SystemdCgroup = false\n"
	v1Root       = "[plugins.cri.containerd.runtimes.runc]\n  runtime_type = \"io.containerd.runc.v2\"\n  [plugins.cri.containerd.runtimes.runc.options]\n    SystemdCgroup = true\n"
)

func edit(t *testing.T, root, p string, f func(string) string) {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(root, p))
	if err != nil {
		t.Fatal(err)
	}
	write(t, root, p, f(string(b)))
}

// v2Root: the kubeadm root (containerd 1.7's default config) with SystemdCgroup on and the
// toolkit's conf.d imported.
func v2Root(t *testing.T, root string) {
	edit(t, root, "/etc/containerd/config.toml", func(s string) string {
		s = strings.Replace(s, "imports = []", `imports = ["/etc/containerd/conf.d/*.toml"]`, 1)
		return strings.Replace(s, "SystemdCgroup = false", "SystemdCgroup = true", 1)
	})
	write(t, root, NvidiaRuntimeBinary, "")
}

// v3Root: containerd 2's default config (the ubuntu2404 root) with SystemdCgroup on.
func v3Root(t *testing.T, root string) {
	edit(t, root, "/etc/containerd/config.toml", func(s string) string {
		if !strings.Contains(s, "SystemdCgroup = true") {
			s = strings.Replace(s, "SystemdCgroup = false", "SystemdCgroup = true", 1)
		}
		return s
	})
	write(t, root, NvidiaRuntimeBinary, "")
}

// toolkitDropInAt writes the toolkit's drop-in against the root as it is, as nvidia-ctk
// runtime configure does (NVIDIA's engine, drop-in mode), at conf.d/99-nvidia.toml.
func toolkitDropInAt(t *testing.T, root string) {
	toolkitDropIn(t, root)
}

// withVersion writes the toolkit's drop-in against a root of another version (the drift
// of NVIDIA/aicr #1688): the engine run on a copy whose version is changed.
func toolkitDropInFor(t *testing.T, root string, version int) {
	t.Helper()
	src := "version = 3\n"
	if version == 2 {
		src = "version = 2\n"
	}
	if version == 4 {
		src = "version = 4\n"
	}
	dir := t.TempDir()
	top := filepath.Join(dir, "config.toml")
	write(t, dir, "/config.toml", src)
	cfg, err := ctkcontainerd.New(ctkcontainerd.WithLogger(quiet{}), ctkcontainerd.WithTopLevelConfigPath(top), ctkcontainerd.WithConfigSource(ctktoml.FromString(src)))
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

func ctrFixtures() []ctrFixture {
	k, c2 := "ubuntu2204-kubeadm", "ubuntu2404-containerd2"
	return []ctrFixture{
		{"v2 root", k, v2Root},
		{"v2 root, toolkit drop-in", k, func(t *testing.T, root string) { v2Root(t, root); toolkitDropInAt(t, root) }},
		{"v2 root, toolkit drop-in written as version 3 (aicr #1688)", k, func(t *testing.T, root string) { v2Root(t, root); toolkitDropInFor(t, root, 3) }},
		{"v2 root, hand-made v3 drop-in", k, func(t *testing.T, root string) {
			v2Root(t, root)
			write(t, root, "/etc/containerd/conf.d/nvidia.toml", v3NvidiaOnly)
		}},
		{"v2 root, runtime-only v2 drop-in", k, func(t *testing.T, root string) {
			v2Root(t, root)
			write(t, root, "/etc/containerd/conf.d/nvidia.toml", v2NvidiaOnly)
		}},
		{"v2 root, drop-in turns SystemdCgroup off", k, func(t *testing.T, root string) {
			v2Root(t, root)
			toolkitDropInAt(t, root)
			write(t, root, "/etc/containerd/conf.d/zz-cgroupfs.toml", v2Cgroupfs)
		}},
		{"v2 root, relative glob, import of an import", k, func(t *testing.T, root string) {
			v2Root(t, root)
			edit(t, root, "/etc/containerd/config.toml", func(s string) string {
				return strings.Replace(s, `imports = ["/etc/containerd/conf.d/*.toml"]`, `imports = ["conf.d/*.toml"]`, 1)
			})
			write(t, root, "/etc/containerd/conf.d/10-chain.toml", "version = 2\nimports = [\"../extra/nvidia.toml\"]\n")
			write(t, root, "/etc/containerd/extra/nvidia.toml", v2NvidiaOnly)
		}},
		{"v2 root, an import that is not there", k, func(t *testing.T, root string) {
			v2Root(t, root)
			edit(t, root, "/etc/containerd/config.toml", func(s string) string {
				return strings.Replace(s, `"/etc/containerd/conf.d/*.toml"`, `"/etc/containerd/conf.d/*.toml", "nvidia.toml"`, 1)
			})
		}},
		{"v2 root, v4 drop-in", k, func(t *testing.T, root string) { v2Root(t, root); toolkitDropInFor(t, root, 4) }},
		{"v1 root", k, func(t *testing.T, root string) {
			write(t, root, "/etc/containerd/config.toml", v1Root)
			write(t, root, NvidiaRuntimeBinary, "")
		}},
		{"v1 root, v2 drop-in", k, func(t *testing.T, root string) {
			write(t, root, "/etc/containerd/config.toml", "imports = [\"/etc/containerd/conf.d/*.toml\"]\n"+v1Root)
			write(t, root, NvidiaRuntimeBinary, "")
			write(t, root, "/etc/containerd/conf.d/nvidia.toml", v2NvidiaOnly)
		}},
		{"v3 root", c2, v3Root},
		{"v3 root, toolkit drop-in", c2, func(t *testing.T, root string) { v3Root(t, root); toolkitDropInAt(t, root) }},
		{"v3 root, v2 runtime-only drop-in", c2, func(t *testing.T, root string) {
			v3Root(t, root)
			write(t, root, "/etc/containerd/conf.d/nvidia.toml", v2NvidiaOnly)
		}},
		{"v3 root without runtimes, v2 drop-in", c2, func(t *testing.T, root string) {
			write(t, root, "/etc/containerd/config.toml", "version = 3\nimports = [\"/etc/containerd/conf.d/*.toml\"]\n")
			write(t, root, NvidiaRuntimeBinary, "")
			write(t, root, "/etc/containerd/conf.d/nvidia.toml", v2NvidiaOnly)
		}},
		{"v3 root, toolkit drop-in written as version 2", c2, func(t *testing.T, root string) { v3Root(t, root); toolkitDropInFor(t, root, 2) }},
		{"v4 root", c2, func(t *testing.T, root string) {
			v3Root(t, root)
			edit(t, root, "/etc/containerd/config.toml", func(s string) string { return strings.Replace(s, "version = 3", "version = 4", 1) })
		}},
		{"v4 root, toolkit drop-in", c2, func(t *testing.T, root string) {
			v3Root(t, root)
			edit(t, root, "/etc/containerd/config.toml", func(s string) string { return strings.Replace(s, "version = 3", "version = 4", 1) })
			toolkitDropInAt(t, root)
		}},
		{"v4 root, v2 drop-in", c2, func(t *testing.T, root string) {
			v3Root(t, root)
			edit(t, root, "/etc/containerd/config.toml", func(s string) string { return strings.Replace(s, "version = 3", "version = 4", 1) })
			write(t, root, "/etc/containerd/conf.d/nvidia.toml", v2NvidiaOnly)
		}},
		{"rke2 rendered config", "rke2", func(t *testing.T, root string) {}},
		{"k3s rendered config", "k3s", func(t *testing.T, root string) {}},
	}
}

// verdict is what the conformance compares.
type verdict struct {
	Loads, Nvidia, Systemd bool
}

func verdictOf(l *ContainerdLoad) verdict {
	if !l.Loads() {
		return verdict{}
	}
	_, nv := l.RuntimeBinary("nvidia")
	return verdict{Loads: true, Nvidia: nv, Systemd: l.SystemdCgroup()}
}

// realVerdict is what the real containerd makes of the files: its `config dump`, and where
// the dump loads them while the model says a file is missing, its daemon (2.x's dump skips
// an import that is not there; the daemon refuses to start).
func realVerdict(t *testing.T, ctx context.Context, root string, runner *hostconfigtest.ContainerdRunner, flavour rep.Flavour, path string, rel ContainerdRelease) (verdict, *ContainerdLoad) {
	t.Helper()
	h := &Host{Root: root, Exec: runner}
	real, ok := h.JudgeLoad(ctx, flavour, path, rel)
	if !ok {
		t.Fatal("the judge did not run")
	}
	rv := verdictOf(real)
	if model := h.ModelLoad(path, rel); rv.Loads && model.missing != "" {
		out, started := runner.StartDaemon(ctx, containerdBinaries(flavour)[0], path)
		if !started {
			t.Logf("containerd %s's dump loads the files, its daemon refuses them: %s", rel, strings.TrimSpace(out))
			real.Err = fmt.Errorf("%s", strings.TrimSpace(out))
			return verdict{}, real
		}
	}
	return rv, real
}

// containerdFiles snapshots every containerd config file of a root.
func containerdFiles(t *testing.T, root string) map[string]string {
	out := map[string]string{}
	for _, d := range []string{"etc/containerd", "var/lib/rancher"} {
		_ = filepath.Walk(filepath.Join(root, d), func(p string, info os.FileInfo, err error) error {
			if err == nil && !info.IsDir() && strings.HasSuffix(p, ".toml") {
				b, _ := os.ReadFile(p)
				out[p] = string(b)
			}
			return nil
		})
	}
	return out
}

func TestContainerdConformance(t *testing.T) {
	bins := containerdBins(t)
	versions := make([]string, 0, len(bins))
	for v := range bins {
		versions = append(versions, v)
	}
	sort.Strings(versions)
	ctx := context.Background()
	var table bytes.Buffer
	for _, f := range ctrFixtures() {
		for _, v := range versions {
			t.Run(f.name+"/containerd "+v, func(t *testing.T) {
				root := fakeRoot(t, f.base, 1)
				f.build(t, root)
				h := &Host{Root: root}
				flavour := h.Flavour()
				paths := ContainerdFor(flavour, 2)
				if err := hostconfigtest.InstallContainerd(root, bins[v], containerdBinaries(flavour)[0]); err != nil {
					t.Fatal(err)
				}
				runner := &hostconfigtest.ContainerdRunner{Root: root}
				rel, _ := ParseContainerdRelease(v)
				rv, real := realVerdict(t, ctx, root, runner, flavour, paths.Config, rel)
				model := h.ModelLoad(paths.Config, rel)
				mv := verdictOf(model)
				fmt.Fprintf(&table, "%-58s %-8s loads=%-5v nvidia=%-5v systemd=%-5v\n", f.name, v, rv.Loads, rv.Nvidia, rv.Systemd)
				if rv != mv {
					t.Errorf("the model and containerd %s disagree:\n  containerd: %+v %v\n  model:      %+v %v", v, rv, real.Err, mv, model.Err)
				}

				// prep's check with the host's containerd as the judge.
				jh := &Host{Root: root, Exec: runner}
				r := rep.New("v0.0.0-test", ModeCheck)
				Check(ctx, jh, r, nil)
				if r.Containerd == nil || r.Containerd.Judge != rep.JudgeContainerd || r.Containerd.Loads != rv.Loads {
					t.Errorf("check: containerd load %+v, want judged by containerd, loads %v", r.Containerd, rv.Loads)
				}
				cc, _ := r.Get(rep.CheckContainerd)
				if !rv.Loads && (cc.Status != rep.Fail || !strings.Contains(cc.Message, "does not start")) {
					t.Errorf("check: %s %q, want a failure that says containerd does not start", cc.Status, cc.Message)
				}
				if rv.Loads && r.NvidiaRuntime != rv.Nvidia && flavour == rep.FlavourKubeadm {
					t.Errorf("check: nvidiaRuntime %v, containerd loads %v", r.NvidiaRuntime, rv.Nvidia)
				}

				// prep --apply (commands other than containerd's recorded), then the
				// real containerd loads the result.
				before := containerdFiles(t, root)
				ar, err := Run(ctx, &Host{Root: root, Exec: runner}, Options{Mode: ModeApply, Node: "n", Runner: runner, Apply: ApplyOptions{RestartRuntime: true}})
				after := containerdFiles(t, root)
				fv, final := realVerdict(t, ctx, root, runner, flavour, paths.Config, rel)
				changed := fmt.Sprint(before) != fmt.Sprint(after)
				restarted := false
				for _, c := range runner.Recorded {
					if len(c) == 3 && c[0] == "systemctl" && c[1] == "restart" {
						restarted = true
					}
				}
				switch {
				case fv.Loads:
				case changed:
					t.Errorf("apply left a configuration containerd %s refuses: %v (apply: %v)", v, final.Err, err)
				case restarted:
					t.Errorf("apply restarted containerd on a configuration containerd %s refuses: %v", v, final.Err)
				}
				if err != nil && strings.Contains(err.Error(), "refuses") && (changed || restarted) {
					t.Errorf("a refused apply changed files (%v) or restarted containerd (%v)", changed, restarted)
				}
				if fv.Loads && flavour == rep.FlavourKubeadm && ar != nil {
					// What the tool says after its apply is what containerd loads.
					sc, _ := ar.Get(rep.CheckSystemdCgroup)
					says := sc.Status == rep.OK || sc.Status == rep.Fixed
					if ar.NvidiaRuntime != fv.Nvidia || says != fv.Systemd {
						t.Errorf("after apply the tool says nvidia=%v SystemdCgroup ok=%v (%s), containerd %s loads nvidia=%v SystemdCgroup=%v (apply: %v)",
							ar.NvidiaRuntime, says, sc.Message, v, fv.Nvidia, fv.Systemd, err)
					}
					if !changed && (!fv.Nvidia || !fv.Systemd) && (sc.Remediation == "" && !says) {
						t.Errorf("apply changed nothing and the check gives no fix: %s", sc.Message)
					}
				}
			})
		}
	}
	t.Logf("what each real containerd makes of each fixture:\n%s", table.String())
}

// TestContainerd1724VersionThreeDropIn: Ubuntu 24.04's containerd 1.7.24, a version 2 root
// importing conf.d, and the toolkit's drop-in written as version 3 (nvidia-ctk against a
// version 3 root: NVIDIA/aicr #1688). containerd 1.7.24 refuses the set, so its next restart
// leaves the node without containerd. The check names the drop-in and containerd's own
// message; --apply rewrites a toolkit drop-in in the root's schema (containerd then loads it
// and is restarted), and refuses, putting everything back, where the drop-in cannot be
// rewritten: containerd's message, no restart.
func TestContainerd1724VersionThreeDropIn(t *testing.T) {
	bins := containerdBins(t)
	bin := bins["v1.7.24"]
	if bin == "" {
		t.Fatal("containerd v1.7.24 is not among the pinned versions")
	}
	ctx := context.Background()
	setup := func(t *testing.T, extra string) (string, *hostconfigtest.ContainerdRunner) {
		root := fakeRoot(t, "ubuntu2204-kubeadm", 1)
		v2Root(t, root)
		toolkitDropInFor(t, root, 3)
		if extra != "" {
			edit(t, root, "/etc/containerd/conf.d/99-nvidia.toml", func(s string) string { return s + extra })
		}
		if err := hostconfigtest.InstallContainerd(root, bin, "/usr/bin/containerd"); err != nil {
			t.Fatal(err)
		}
		return root, &hostconfigtest.ContainerdRunner{Root: root}
	}
	t.Run("check", func(t *testing.T) {
		root, runner := setup(t, "")
		r := rep.New("v0.0.0-test", ModeCheck)
		Check(ctx, &Host{Root: root, Exec: runner}, r, nil)
		c := check(t, r, rep.CheckContainerd, rep.Fail, "containerd 1.7.24 does not start", "unsupported config version `3`",
			"/etc/containerd/conf.d/99-nvidia.toml is a version 3 drop-in under a version 2 root", "loaded by containerd 1.7.24 (/usr/bin/containerd)",
			"kubectl gpu prep --apply rewrites /etc/containerd/conf.d/99-nvidia.toml in the root's schema (version 2)")
		check(t, r, rep.CheckNvidiaRuntime, rep.Fail, "the next restart leaves the node without containerd")
		if r.Containerd.Judge != rep.JudgeContainerd || r.Containerd.Loads || r.Containerd.Release != "1.7.24" {
			t.Errorf("containerd load %+v", r.Containerd)
		}
		// With no containerd to run, the model says the same and says it is the model.
		if err := os.Remove(filepath.Join(root, "usr/bin/containerd")); err != nil {
			t.Fatal(err)
		}
		status, _ := os.ReadFile(filepath.Join(root, "var/lib/dpkg/status"))
		write(t, root, "/var/lib/dpkg/status", string(status)+"\nPackage: containerd\nStatus: install ok installed\nVersion: 1.7.24-0ubuntu1~24.04.2\n")
		m := rep.New("v0.0.0-test", ModeCheck)
		Check(ctx, &Host{Root: root}, m, nil)
		check(t, m, rep.CheckContainerd, rep.Fail, "containerd 1.7.24 does not start", "unsupported config version `3`", "99-nvidia.toml is a version 3 drop-in", "the model's answer for containerd 1.7.24")
		_ = c
	})
	t.Run("apply rewrites the toolkit's drop-in", func(t *testing.T) {
		root, runner := setup(t, "")
		r, err := Run(ctx, &Host{Root: root, Exec: runner}, Options{Mode: ModeApply, Node: "n", Runner: runner, Apply: ApplyOptions{RestartRuntime: true}})
		if err != nil {
			t.Fatal(err)
		}
		var rewrite *rep.Change
		for i, c := range r.Changes {
			if c.File == "/etc/containerd/conf.d/99-nvidia.toml" {
				rewrite = &r.Changes[i]
			}
		}
		if rewrite == nil || !rewrite.Done || !strings.Contains(rewrite.Diff, "-version = 3") || !strings.Contains(rewrite.Diff, "+version = 2") || !strings.Contains(rewrite.Note, "rewritten in the root's schema") {
			t.Fatalf("the drop-in's rewrite: %+v", rewrite)
		}
		if !strings.Contains(readFile(t, root, "/etc/containerd/conf.d/99-nvidia.toml"), `plugins."io.containerd.grpc.v1.cri".containerd.runtimes.nvidia`) {
			t.Error("the rewritten drop-in has no version 2 nvidia runtime")
		}
		if bs, _ := filepath.Glob(filepath.Join(root, "etc/containerd/conf.d/99-nvidia.toml.kubectl-gpu-*.bak")); len(bs) != 1 {
			t.Errorf("backups %v, want the drop-in's", bs)
		}
		fv, final := realVerdict(t, ctx, root, runner, rep.FlavourKubeadm, "/etc/containerd/config.toml", ContainerdRelease{1, 7, 24})
		if !fv.Loads || !fv.Nvidia || !fv.Systemd {
			t.Errorf("containerd 1.7.24 after apply: %+v %v", fv, final.Err)
		}
		restarted := false
		for _, c := range runner.Recorded {
			restarted = restarted || strings.Join(c, " ") == "systemctl restart containerd"
		}
		if !restarted {
			t.Errorf("containerd not restarted after a change it loads: %v", runner.Recorded)
		}
		check(t, r, rep.CheckNvidiaRuntime, rep.Fixed)
	})
	t.Run("apply refuses what it cannot rewrite", func(t *testing.T) {
		// The drop-in also configures the image service's registry, which a rewrite would lose.
		root, runner := setup(t, "\n[plugins.\"io.containerd.cri.v1.images\".registry]\n  config_path = \"/etc/containerd/certs.d\"\n")
		before := containerdFiles(t, root)
		r, err := Run(ctx, &Host{Root: root, Exec: runner}, Options{Mode: ModeApply, Node: "n", Runner: runner, Apply: ApplyOptions{RestartRuntime: true}})
		if err == nil || !strings.Contains(err.Error(), "containerd 1.7.24 refuses the configuration it would restart with") || !strings.Contains(err.Error(), "unsupported config version `3`") || !strings.Contains(err.Error(), "put back") {
			t.Fatalf("apply: %v", err)
		}
		if after := containerdFiles(t, root); fmt.Sprint(before) != fmt.Sprint(after) {
			t.Error("a refused apply left containerd's files changed")
		}
		for _, c := range runner.Recorded {
			if strings.Join(c, " ") == "systemctl restart containerd" {
				t.Error("containerd restarted on a configuration it refuses")
			}
		}
		check(t, r, rep.CheckContainerd, rep.Fail, "unsupported config version `3`", "rewrite /etc/containerd/conf.d/99-nvidia.toml as a version 2 file by hand")
		if !strings.Contains(r.Error, "refuses") {
			t.Errorf("report error %q", r.Error)
		}
	})
}

func readFile(t *testing.T, root, p string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(root, p))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
