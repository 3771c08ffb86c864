package hostconfig

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/kubectl-gpu/kubectl-gpu/common/hostconfig/hostconfigtest"
	rep "github.com/kubectl-gpu/kubectl-gpu/common/nodereport"
	"github.com/kubectl-gpu/kubectl-gpu/common/pkginstall"
)

// The package-install tests run the real apt-get and dpkg of a Debian bookworm root
// (hack/testenv/debian-root.sh) under chroot, against flat apt repositories served on 127.0.0.1
// that hold labelled stand-in packages under NVIDIA's names (they install small scripts,
// not a driver or a toolkit), signed with a key the test makes.

const testKernel = "6.1.0-99-amd64"

type aptFixture struct {
	root string
	host *Host
	run  *hostconfigtest.Chroot
	repo *hostconfigtest.AptRepo
}

func toolkitStandIns(v string) []hostconfigtest.StandIn {
	say := func(what string) string {
		return "#!/bin/sh\necho 'stand-in " + what + " " + v + " (kubectl-gpu tests)'\n"
	}
	return []hostconfigtest.StandIn{
		{Name: "libnvidia-container1", Version: v},
		{Name: "libnvidia-container-tools", Version: v, Depends: "libnvidia-container1 (= " + v + ")", Files: map[string]string{"/usr/bin/nvidia-container-cli": say("nvidia-container-cli")}},
		{Name: "nvidia-container-toolkit-base", Version: v, Files: map[string]string{"/usr/bin/nvidia-ctk": say("nvidia-ctk"), "/usr/bin/nvidia-container-runtime": say("nvidia-container-runtime")}},
		{Name: "nvidia-container-toolkit", Version: v, Depends: "nvidia-container-toolkit-base (= " + v + "), libnvidia-container-tools (= " + v + ")",
			Files: map[string]string{"/usr/bin/nvidia-container-runtime-hook": say("nvidia-container-runtime-hook")}},
	}
}

func newAptFixture(t *testing.T) *aptFixture {
	t.Helper()
	tarball := hostconfigtest.DebianRootTar()
	if tarball == "" {
		if os.Getenv("KGPU_REQUIRE_E2E") != "" {
			t.Fatal("no Debian root: run hack/testenv/debian-root.sh (make tools builds it)")
		}
		t.Skip("no Debian root for the real apt-get: run hack/testenv/debian-root.sh (make tools builds it)")
	}
	if os.Getuid() != 0 {
		t.Skip("chroot needs root")
	}
	f := &aptFixture{root: filepath.Join(t.TempDir(), "root")}
	if err := os.MkdirAll(f.root, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := hostconfigtest.UnpackDebianRoot(tarball, f.root, testKernel); err != nil {
		t.Fatal(err)
	}
	f.host, f.run = &Host{Root: f.root}, &hostconfigtest.Chroot{Root: f.root}
	var err error
	if f.repo, err = hostconfigtest.NewAptRepo(t.TempDir()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(f.repo.Close)
	pkgs := append(toolkitStandIns("1.17.8-1"), toolkitStandIns("1.18.0-1")...)
	if err := f.repo.Publish("libnvidia-container/stable/deb/amd64", "libnvidia-container/gpgkey", pkgs...); err != nil {
		t.Fatal(err)
	}
	driver := []hostconfigtest.StandIn{
		{Name: "cuda-drivers-580", Version: "580.95.05-1", Files: map[string]string{"/usr/bin/nvidia-smi": "#!/bin/sh\necho 'stand-in nvidia-smi (kubectl-gpu tests)'\n"}},
		{Name: "linux-headers-" + testKernel, Version: "6.1.0-99"},
	}
	if err := f.repo.Publish("compute/cuda/repos/debian12/x86_64", "compute/cuda/repos/debian12/x86_64/3bf863cc.pub", driver...); err != nil {
		t.Fatal(err)
	}
	return f
}

func (f *aptFixture) agent(t *testing.T, mode rep.Mode, in Install) (*rep.Report, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	if in.Repo == "" {
		in.Repo = f.repo.URL()
	}
	return Run(ctx, f.host, Options{Mode: mode, Node: "n1", Arch: "amd64", Install: in, Runner: f.run})
}

func installChange(r *rep.Report, check string) (rep.Change, bool) {
	for _, c := range r.Changes {
		if c.Check == check && len(c.Packages) > 0 {
			return c, true
		}
	}
	return rep.Change{}, false
}

func ranApt(c *hostconfigtest.Chroot, verb string) bool {
	for _, a := range c.Ran {
		if strings.Contains(strings.Join(a, " "), "apt-get") && a[len(a)-1] != "update" && strings.Contains(strings.Join(a, " "), " "+verb) {
			return true
		}
	}
	return false
}

func TestInstallToolkitPinned(t *testing.T) {
	f := newAptFixture(t)
	statusBefore, _ := f.host.Read("/var/lib/dpkg/status")

	plan, err := f.agent(t, ModePlan, Install{ToolkitVersion: "1.17.8"})
	if err != nil {
		t.Fatalf("plan: %v", err)
	}
	c, ok := installChange(plan, rep.CheckToolkit)
	if !ok {
		t.Fatalf("plan has no toolkit install: %+v", plan.Changes)
	}
	got := map[string]string{}
	for _, p := range c.Packages {
		got[p.Name] = p.Version
	}
	for _, n := range []string{"nvidia-container-toolkit", "nvidia-container-toolkit-base", "libnvidia-container-tools", "libnvidia-container1"} {
		if got[n] != "1.17.8-1" {
			t.Errorf("plan resolved %s %q, want the pinned 1.17.8-1 (the repository's newest is 1.18.0-1): %v", n, got[n], got)
		}
	}
	var list, key bool
	for _, ch := range plan.Changes {
		list = list || ch.File == ToolkitAptList && strings.Contains(ch.Diff, "signed-by="+ToolkitAptKeyring) && strings.Contains(ch.Diff, f.repo.URL()+"/libnvidia-container/stable/deb/$(ARCH) /")
		key = key || ch.File == ToolkitAptKeyring && strings.Contains(ch.Note, "signing key")
	}
	if !list || !key {
		t.Errorf("plan does not show the repository file with signed-by (%v) and the keyring (%v): %+v", list, key, plan.Changes)
	}
	// The plan changed nothing: no repository file, no package, no private apt state left.
	if statusAfter, _ := f.host.Read("/var/lib/dpkg/status"); statusAfter != statusBefore {
		t.Error("the plan changed the dpkg status")
	}
	if f.host.Exists(ToolkitAptList) || f.host.Exists(ToolkitAptKeyring) {
		t.Error("the plan wrote the repository files")
	}
	if left := f.host.Glob("/run/kubectl-gpu-plan-*"); len(left) > 0 {
		t.Errorf("the plan left %v", left)
	}

	applied, err := f.agent(t, ModeApply, Install{ToolkitVersion: "1.17.8"})
	if err != nil {
		t.Fatalf("apply: %v\n%+v", err, applied.Changes)
	}
	for _, n := range []string{"nvidia-container-toolkit", "libnvidia-container1"} {
		if v := f.host.installedVersion(n, true); v != "1.17.8-1" {
			t.Errorf("%s installed %q, want 1.17.8-1", n, v)
		}
	}
	if k, _ := f.host.Read(ToolkitAptKeyring); len(k) == 0 || strings.Contains(k, "BEGIN PGP") {
		t.Errorf("keyring not written in binary form (%d bytes)", len(k))
	}
	if st := status(applied, rep.CheckToolkit); st != rep.OK {
		t.Errorf("toolkit check after the install = %s, want ok", st)
	}

	// A second run installs nothing.
	f.run.Ran = nil
	again, err := f.agent(t, ModePlan, Install{ToolkitVersion: "1.17.8"})
	if err != nil {
		t.Fatal(err)
	}
	if c, ok := installChange(again, rep.CheckToolkit); ok || len(f.run.Ran) > 0 {
		t.Errorf("second plan: install %+v, commands %v; want nothing", c, f.run.Ran)
	}
	if _, err := f.agent(t, ModeApply, Install{ToolkitVersion: "1.17.8"}); err != nil || ranApt(f.run, "install") {
		t.Errorf("second apply: %v, commands %v; want nothing installed", err, f.run.Ran)
	}
	// Asking for the newer pin upgrades.
	up, err := f.agent(t, ModePlan, Install{ToolkitVersion: "1.18.0-1"})
	if c, ok := installChange(up, rep.CheckToolkit); err != nil || !ok || c.Packages[0].Version != "1.18.0-1" || c.Packages[0].Replaces != "1.17.8-1" {
		t.Errorf("upgrade plan: %v %+v", err, up.Changes)
	}
}

func TestInstallDriverDebianDKMS(t *testing.T) {
	f := newAptFixture(t)
	plan, err := f.agent(t, ModePlan, Install{DriverBranch: "580"})
	if err != nil {
		t.Fatalf("plan: %v", err)
	}
	c, ok := installChange(plan, rep.CheckDriver)
	if !ok || len(c.Packages) != 2 || plan.Reboot == "" {
		t.Fatalf("plan: install %+v reboot %q; want cuda-drivers-580 and the kernel headers, and a reboot", c, plan.Reboot)
	}
	applied, err := f.agent(t, ModeApply, Install{DriverBranch: "580"})
	if err != nil {
		t.Fatalf("apply: %v", err)
	}
	if f.host.installedVersion("cuda-drivers-580", true) == "" || f.host.installedVersion("linux-headers-"+testKernel, true) == "" {
		t.Error("driver or headers not installed")
	}
	if applied.Reboot == "" {
		t.Error("apply does not say a reboot is needed")
	}
	if !f.host.Exists("/etc/apt/sources.list.d/cuda-debian12-x86_64.list") || !f.host.Exists(CUDAAptKeyring) {
		t.Error("CUDA repository file or keyring missing")
	}
}

// nothingChanged fails when the root's apt sources, keyrings or packages changed.
func nothingChanged(t *testing.T, f *aptFixture, statusBefore string) {
	t.Helper()
	if s, _ := f.host.Read("/var/lib/dpkg/status"); s != statusBefore {
		t.Error("the package state changed")
	}
	if l := f.host.Glob("/etc/apt/sources.list.d/*"); len(l) > 0 {
		t.Errorf("repository files written: %v", l)
	}
	if f.host.Exists(ToolkitAptKeyring) || f.host.Exists(CUDAAptKeyring) {
		t.Error("keyring written")
	}
}

func TestInstallRefusals(t *testing.T) {
	f := newAptFixture(t)
	before, _ := f.host.Read("/var/lib/dpkg/status")
	cases := []struct {
		name string
		in   Install
		mode rep.Mode
		want string
		prep func()
	}{
		{name: "unknown branch", in: Install{DriverBranch: "999"}, mode: ModePlan, want: "cuda-drivers-999"},
		{name: "unknown toolkit version", in: Install{ToolkitVersion: "1.2.3"}, mode: ModePlan, want: "1.2.3-1"},
		{name: "repository down", in: Install{ToolkitVersion: "1.17.8", Key: f.repo.PublicKey()}, mode: ModePlan, want: "cannot be read",
			prep: func() { f.repo.SetDown(true) }},
		{name: "bad signature", in: Install{ToolkitVersion: "1.17.8", Key: hostconfigtest.OtherKey()}, mode: ModePlan, want: "cannot be read"},
		{name: "no key", in: Install{ToolkitVersion: "1.17.8", Repo: "http://127.0.0.1:1"}, mode: ModePlan, want: "--package-key"},
		{name: "secure boot dkms", in: Install{DriverBranch: "580"}, mode: ModeApply, want: "Secure Boot is on",
			prep: func() {
				_ = os.MkdirAll(f.host.Path("/sys/firmware/efi/efivars"), 0o755)
				_ = os.WriteFile(f.host.Path(secureBootEF), []byte{6, 0, 0, 0, 1}, 0o644)
			}},
		{name: "unsupported os", in: Install{ToolkitVersion: "1.17.8"}, mode: ModeApply, want: "supported: Ubuntu",
			prep: func() {
				_ = os.WriteFile(f.host.Path("/etc/os-release"), []byte("ID=arch\nPRETTY_NAME=\"Arch Linux\"\n"), 0o644)
			}},
	}
	osr, _ := f.host.Read("/etc/os-release")
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if tc.prep != nil {
				tc.prep()
			}
			defer func() {
				f.repo.SetDown(false)
				os.Remove(f.host.Path(secureBootEF))
				_ = os.WriteFile(f.host.Path("/etc/os-release"), []byte(osr), 0o644)
			}()
			r, err := f.agent(t, tc.mode, tc.in)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want one saying %q", err, tc.want)
			}
			t.Log(err)
			if r == nil || r.Error != err.Error() {
				t.Errorf("the report does not carry the error: %+v", r)
			}
			if strings.Contains(err.Error(), "\n") {
				t.Errorf("error is not one line: %q", err)
			}
			nothingChanged(t, f, before)
		})
	}
}

func TestInstallWaitsForTheDpkgLock(t *testing.T) {
	f := newAptFixture(t)
	before, _ := f.host.Read("/var/lib/dpkg/status")
	// Another process holds dpkg's frontend lock the way apt does (an fcntl write lock).
	lock, err := os.OpenFile(f.host.Path("/var/lib/dpkg/lock-frontend"), os.O_RDWR|os.O_CREATE, 0o640)
	if err != nil {
		t.Fatal(err)
	}
	defer lock.Close()
	fl := syscall.Flock_t{Type: syscall.F_WRLCK, Whence: 0}
	if err := syscall.FcntlFlock(lock.Fd(), syscall.F_SETLK, &fl); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	_, err = f.agent(t, ModeApply, Install{ToolkitVersion: "1.17.8", LockTimeout: 3 * time.Second})
	if err == nil || !strings.Contains(err.Error(), "held by another process") || !strings.Contains(err.Error(), "/var/lib/dpkg/lock-frontend") {
		t.Fatalf("error %v, want the lock named", err)
	}
	if time.Since(start) < 3*time.Second {
		t.Errorf("gave up after %s, before the lock timeout", time.Since(start))
	}
	if s, _ := f.host.Read("/var/lib/dpkg/status"); s != before {
		t.Error("packages changed while the lock was held")
	}
	// Released while waiting: the install goes on.
	go func() {
		time.Sleep(2 * time.Second)
		unlock := syscall.Flock_t{Type: syscall.F_UNLCK, Whence: 0}
		_ = syscall.FcntlFlock(lock.Fd(), syscall.F_SETLK, &unlock)
	}()
	if _, err := f.agent(t, ModeApply, Install{ToolkitVersion: "1.17.8", LockTimeout: time.Minute}); err != nil {
		t.Fatalf("apply after the lock was released: %v", err)
	}
	if v := f.host.installedVersion("nvidia-container-toolkit", true); v != "1.17.8-1" {
		t.Errorf("installed %q after waiting for the lock", v)
	}
}

// TestInstallDriverUbuntuSigned: on Ubuntu the driver comes from the host's own archive
// (here a stand-in archive the root already trusts): the -server branch with Canonical's
// signed precompiled modules for the running kernel, so Secure Boot on is fine and no
// repository file is written. As ubuntu-drivers does, the modules metapackage of the
// host's kernel metapackage comes too when the archive has it, so a kernel upgrade brings
// its modules — here a newer kernel is installed and waits for the reboot the install
// needs: its modules come with the metapackage, or the roll would boot a kernel without
// a driver.
func TestInstallDriverUbuntuSigned(t *testing.T) {
	const running, newer = "6.8.0-45-generic", "6.8.0-49-generic"
	for _, withMeta := range []bool{true, false} {
		t.Run(fmt.Sprintf("archive-has-metapackage=%v", withMeta), func(t *testing.T) {
			f := newAptFixture(t)
			archive := []hostconfigtest.StandIn{
				{Name: "linux-modules-nvidia-580-server-" + running, Version: "6.8.0-45.45+1"},
				{Name: "linux-modules-nvidia-580-server-" + newer, Version: "6.8.0-49.49+1"},
				{Name: "nvidia-headless-no-dkms-580-server", Version: "580.95.05-0ubuntu0.22.04.1"},
				{Name: "nvidia-utils-580-server", Version: "580.95.05-0ubuntu0.22.04.1", Files: map[string]string{"/usr/bin/nvidia-smi": "#!/bin/sh\necho 'stand-in nvidia-smi (kubectl-gpu tests)'\n"}},
			}
			meta := "linux-modules-nvidia-580-server-generic-hwe-22.04"
			if withMeta {
				archive = append(archive, hostconfigtest.StandIn{Name: meta, Version: "6.8.0-49.49~22.04.1+1", Depends: "linux-modules-nvidia-580-server-" + newer})
			}
			f.ubuntu(t, running, newer, true, archive)

			plan, err := f.agent(t, ModePlan, Install{DriverBranch: "580"})
			if err != nil {
				t.Fatalf("plan: %v", err)
			}
			c, ok := installChange(plan, rep.CheckDriver)
			if !ok || !strings.Contains(c.Note, "signed precompiled") {
				t.Fatalf("plan: %+v", plan.Changes)
			}
			got := map[string]bool{}
			for _, p := range c.Packages {
				got[p.Name] = true
			}
			want := []string{"linux-modules-nvidia-580-server-" + running, "nvidia-headless-no-dkms-580-server", "nvidia-utils-580-server"}
			if withMeta {
				want = append(want, meta, "linux-modules-nvidia-580-server-"+newer)
				if !strings.Contains(c.Note, meta+" follows linux-image-generic-hwe-22.04") {
					t.Errorf("plan note does not say the modules follow the kernel metapackage: %q", c.Note)
				}
			} else if !strings.Contains(c.Note, "the repositories have no "+meta) {
				t.Errorf("plan note does not say what a kernel upgrade will need: %q", c.Note)
			}
			for _, w := range want {
				if !got[w] {
					t.Errorf("plan does not install %s: %v", w, c.Packages)
				}
			}
			if len(c.Packages) != len(want) {
				t.Errorf("plan installs %d packages, want %d: %v", len(c.Packages), len(want), c.Packages)
			}
			for _, ch := range plan.Changes {
				if ch.File != "" && strings.HasPrefix(ch.File, "/etc/apt") {
					t.Errorf("a repository file planned on a host whose archive has the driver: %s", ch.File)
				}
			}
			if _, err := f.agent(t, ModeApply, Install{DriverBranch: "580"}); err != nil {
				t.Fatalf("apply: %v", err)
			}
			if v := f.host.installedVersion("linux-modules-nvidia-580-server-"+running, true); v != "6.8.0-45.45+1" {
				t.Errorf("precompiled modules for the running kernel installed %q", v)
			}
			if v := f.host.installedVersion("linux-modules-nvidia-580-server-"+newer, true); withMeta != (v == "6.8.0-49.49+1") {
				t.Errorf("modules for the kernel the reboot starts installed %q (metapackage in the archive: %v)", v, withMeta)
			}
			if v := f.host.installedVersion(meta, true); withMeta != (v != "") {
				t.Errorf("%s installed %q (in the archive: %v)", meta, v, withMeta)
			}
		})
	}
}

func TestKernelMeta(t *testing.T) {
	status := func(pkgs ...string) string {
		var b strings.Builder
		for _, p := range pkgs {
			name, dep, _ := strings.Cut(p, ">")
			b.WriteString("Package: " + name + "\nStatus: install ok installed\nVersion: 1\n")
			if dep != "" {
				b.WriteString("Depends: " + dep + ", linux-firmware\n")
			}
			b.WriteString("\n")
		}
		return b.String()
	}
	for _, tc := range []struct {
		name, kernel, status, want string
	}{
		{"generic", "6.8.0-45-generic", status("linux-image-6.8.0-45-generic", "linux-image-generic>linux-image-6.8.0-45-generic"), "linux-image-generic"},
		{"the newest kernel's", "6.8.0-45-generic", status("linux-image-generic>linux-image-6.8.0-99-generic", "linux-image-generic-hwe-22.04>linux-image-6.8.0-100-generic (= 6.8.0-100.100)"), "linux-image-generic-hwe-22.04"},
		{"other flavour", "6.8.0-1015-aws", status("linux-image-generic>linux-image-6.8.0-45-generic"), ""},
		{"cloud", "6.8.0-1015-aws", status("linux-image-aws>linux-image-6.8.0-1015-aws", "linux-image-generic>linux-image-6.8.0-45-generic"), "linux-image-aws"},
		{"hand-installed kernel", "6.8.0-45-generic", status("linux-image-6.8.0-45-generic"), ""},
		{"not installed", "6.8.0-45-generic", strings.Replace(status("linux-image-generic>linux-image-6.8.0-45-generic"), "install ok installed", "deinstall ok config-files", 1), ""},
		{"no flavour", "6.8.0", status("linux-image-generic>linux-image-6.8.0-45-generic"), ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := &Host{Root: t.TempDir()}
			if err := os.MkdirAll(h.Path("/var/lib/dpkg"), 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(h.Path("/var/lib/dpkg/status"), []byte(tc.status), 0o644); err != nil {
				t.Fatal(err)
			}
			if got := h.kernelMeta(tc.kernel); got != tc.want {
				t.Errorf("kernelMeta(%s) = %q, want %q", tc.kernel, got, tc.want)
			}
		})
	}
}

// ubuntu makes the fixture an Ubuntu 22.04 host running kernel running, with a newer kernel
// installed that its kernel metapackage (linux-image-generic-hwe-22.04) brings, Secure Boot
// on or off, and archive as its own (trusted) Ubuntu archive.
func (f *aptFixture) ubuntu(t *testing.T, running, newer string, secureBoot bool, archive []hostconfigtest.StandIn) {
	t.Helper()
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(os.WriteFile(f.host.Path("/proc/sys/kernel/osrelease"), []byte(running+"\n"), 0o644))
	// The host's kernels, as Ubuntu's packages name them (stand-ins with no files).
	must(hostconfigtest.DpkgInstall(context.Background(), f.root, append(hostconfigtest.UbuntuKernel(newer, "linux-image-generic-hwe-22.04"),
		hostconfigtest.StandIn{Name: "linux-image-" + running, Version: running + ".1"})...))
	must(f.repo.Publish("ubuntu-archive", "ubuntu-archive/key.asc", archive...))
	key, err := keyring(f.repo.PublicKey())
	must(err)
	must(os.WriteFile(f.host.Path("/usr/share/keyrings/stand-in-archive.gpg"), key.Binary, 0o644))
	must(os.WriteFile(f.host.Path("/etc/apt/sources.list"), []byte("deb [signed-by=/usr/share/keyrings/stand-in-archive.gpg] "+f.repo.URL()+"/ubuntu-archive /\n"), 0o644))
	must(os.WriteFile(f.host.Path("/etc/os-release"), []byte("ID=ubuntu\nVERSION_ID=\"22.04\"\nPRETTY_NAME=\"Ubuntu 22.04.5 LTS\"\n"), 0o644))
	must(os.MkdirAll(f.host.Path("/sys/firmware/efi/efivars"), 0o755))
	if secureBoot {
		must(os.WriteFile(f.host.Path(secureBootEF), []byte{6, 0, 0, 0, 1}, 0o644))
	}
}

// TestInstallDriverUbuntuDKMSFallback: when the Ubuntu archive has no precompiled modules
// for the running kernel (a kernel newer than the archive's modules, or one of another
// origin), the driver is built by DKMS with the kernel's headers, as ubuntu-drivers falls
// back to — and with Secure Boot on that is refused at plan time, nothing installed.
func TestInstallDriverUbuntuDKMSFallback(t *testing.T) {
	const running, newer = "6.8.0-45-generic", "6.8.0-49-generic"
	archive := []hostconfigtest.StandIn{
		{Name: "linux-modules-nvidia-580-server-" + newer, Version: "6.8.0-49.49+1"},
		{Name: "nvidia-headless-no-dkms-580-server", Version: "580.95.05-0ubuntu0.22.04.1"},
		{Name: "nvidia-dkms-580-server", Version: "580.95.05-0ubuntu0.22.04.1"},
		{Name: "nvidia-headless-580-server", Version: "580.95.05-0ubuntu0.22.04.1", Depends: "nvidia-dkms-580-server"},
		{Name: "nvidia-utils-580-server", Version: "580.95.05-0ubuntu0.22.04.1"},
		{Name: "linux-headers-" + running, Version: "6.8.0-45.45"},
	}
	t.Run("secure-boot-off", func(t *testing.T) {
		f := newAptFixture(t)
		f.ubuntu(t, running, newer, false, archive)
		plan, err := f.agent(t, ModePlan, Install{DriverBranch: "580"})
		if err != nil {
			t.Fatalf("plan: %v", err)
		}
		c, ok := installChange(plan, rep.CheckDriver)
		if !ok || !strings.Contains(c.Note, "DKMS") || !strings.Contains(c.Note, "no precompiled modules for kernel "+running) {
			t.Fatalf("plan: %+v", plan.Changes)
		}
		got := map[string]bool{}
		for _, p := range c.Packages {
			got[p.Name] = true
		}
		for _, w := range []string{"linux-headers-" + running, "nvidia-headless-580-server", "nvidia-dkms-580-server", "nvidia-utils-580-server"} {
			if !got[w] {
				t.Errorf("plan does not install %s: %v", w, c.Packages)
			}
		}
		if got["nvidia-headless-no-dkms-580-server"] {
			t.Errorf("plan installs the no-dkms package with no precompiled modules: %v", c.Packages)
		}
		if _, err := f.agent(t, ModeApply, Install{DriverBranch: "580"}); err != nil {
			t.Fatalf("apply: %v", err)
		}
		if v := f.host.installedVersion("nvidia-dkms-580-server", true); v == "" {
			t.Errorf("nvidia-dkms-580-server not installed")
		}
	})
	t.Run("secure-boot-on", func(t *testing.T) {
		f := newAptFixture(t)
		f.ubuntu(t, running, newer, true, archive)
		statusBefore, _ := f.host.Read("/var/lib/dpkg/status")
		_, err := f.agent(t, ModePlan, Install{DriverBranch: "580"})
		if err == nil || !strings.Contains(err.Error(), "Secure Boot is on and the repositories have no signed precompiled NVIDIA modules for kernel "+running) {
			t.Fatalf("plan: %v, want the Secure Boot refusal", err)
		}
		if _, err := f.agent(t, ModeApply, Install{DriverBranch: "580"}); err == nil || !strings.Contains(err.Error(), "Secure Boot is on") {
			t.Fatalf("apply: %v, want the Secure Boot refusal", err)
		}
		nothingChanged(t, f, statusBefore)
	})
}

// TestDnfResolution: on RHEL-compatible hosts the plan asks dnf with --assumeno (no dnf
// here: its answer is recorded from dnf 4's output) and reads the transaction.
func TestDnfResolution(t *testing.T) {
	root := t.TempDir()
	h := &Host{Root: root}
	if err := os.MkdirAll(h.Path("/run"), 0o755); err != nil {
		t.Fatal(err)
	}
	out := `Last metadata expiration check: 0:00:01 ago on Tue 01 Dec 2026 10:00:00 AM UTC.
Dependencies resolved.
================================================================================
 Package                        Arch    Version    Repository               Size
================================================================================
Installing:
 nvidia-container-toolkit       x86_64  1.17.8-1   nvidia-container-toolkit 1.2 M
Installing dependencies:
 libnvidia-container-tools      x86_64  1.17.8-1   nvidia-container-toolkit  40 k
 libnvidia-container1           x86_64  1.17.8-1   nvidia-container-toolkit 1.0 M
 nvidia-container-toolkit-base  x86_64  1.17.8-1   nvidia-container-toolkit 5.6 M

Transaction Summary
================================================================================
Install  4 Packages

Total download size: 7.8 M
Installed size: 26 M
Operation aborted.
`
	run := &answering{out: out}
	p := &packagePlan{d: distro{ID: "rhel", Version: "9"}, keys: map[string]pkginstall.Key{},
		steps: []pkgStep{{check: rep.CheckToolkit, what: "NVIDIA Container Toolkit 1.17.8", packages: []string{"nvidia-container-toolkit-1.17.8-1"}}}}
	res, err := p.resolve(context.Background(), h, run)
	if err != nil {
		t.Fatal(err)
	}
	if got := res[rep.CheckToolkit]; len(got) != 4 || got[0].Name != "nvidia-container-toolkit" || got[0].Version != "1.17.8-1" {
		t.Errorf("resolved %+v", got)
	}
	if a := strings.Join(run.argv, " "); !strings.Contains(a, "--assumeno") || !strings.Contains(a, "install nvidia-container-toolkit-1.17.8-1") {
		t.Errorf("dnf asked %q", a)
	}
	run.out = "Error: Unable to find a match: nvidia-container-toolkit-9.9.9-1\n"
	if _, err := p.resolve(context.Background(), h, run); err == nil || !strings.Contains(err.Error(), "Unable to find a match") {
		t.Errorf("a missing version: %v", err)
	}
	if cmds := p.commands(); len(cmds) != 1 || strings.Join(cmds[0].argv, " ") != "dnf -y install nvidia-container-toolkit-1.17.8-1" {
		t.Errorf("install commands %v", cmds)
	}
}

// answering is a Runner that answers every command with out (and records the last).
type answering struct {
	out  string
	argv []string
}

func (a *answering) Run(_ context.Context, argv ...string) (string, error) {
	a.argv = argv
	return a.out, nil
}
func (a *answering) Note() string { return "recorded" }

// TestInstallPackageManagerFails: a package whose maintainer script fails makes apt-get
// fail after a plan that resolved; the error is apt's own last words on one line, the
// repository file and keyring are whole (written before, atomically), and the package state
// is what dpkg left, not touched further.
func TestInstallPackageManagerFails(t *testing.T) {
	f := newAptFixture(t)
	bad := toolkitStandIns("1.17.9-1")
	for i := range bad {
		if bad[i].Name == "nvidia-container-toolkit-base" {
			bad[i].Files["/DEBIAN/postinst"] = "#!/bin/sh\necho 'stand-in postinst fails on purpose' >&2\nexit 1\n"
		}
	}
	if err := f.repo.Publish("libnvidia-container/stable/deb/amd64", "libnvidia-container/gpgkey", append(append(toolkitStandIns("1.17.8-1"), toolkitStandIns("1.18.0-1")...), bad...)...); err != nil {
		t.Fatal(err)
	}
	if _, err := f.agent(t, ModePlan, Install{ToolkitVersion: "1.17.9"}); err != nil {
		t.Fatalf("plan: %v", err)
	}
	r, err := f.agent(t, ModeApply, Install{ToolkitVersion: "1.17.9"})
	if err == nil || !strings.Contains(err.Error(), "install NVIDIA Container Toolkit 1.17.9: ") || !strings.Contains(err.Error(), "dpkg") || strings.Contains(err.Error(), "\n") || r.Error == "" {
		t.Fatalf("apply: %v (report error %q); want apt's error on one line", err, r.Error)
	}
	t.Log(err)
	for _, left := range []string{"left on the host for its package manager: ", ToolkitAptList + " (new)", ToolkitAptKeyring + " (new)"} {
		if !strings.Contains(err.Error(), left) {
			t.Errorf("the error does not name what the failed install left (%q): %v", left, err)
		}
	}
	list, _ := f.host.Read(ToolkitAptList)
	if !strings.Contains(list, "signed-by="+ToolkitAptKeyring) || !f.host.Exists(ToolkitAptKeyring) {
		t.Errorf("repository file or keyring not whole: %q", list)
	}
	if left := f.host.Glob("/etc/apt/sources.list.d/.*"); len(left) > 0 {
		t.Errorf("temporary files left: %v", left)
	}
	if st, _ := f.host.Read("/var/lib/dpkg/status"); !strings.Contains(st, "Package: nvidia-container-toolkit-base\nStatus: install ok half-configured") {
		t.Errorf("dpkg's state is not what dpkg left (half-configured)")
	}
}

// TestRecordedInstallKeepsThePlannedPackages: with the recording runner (Recorder,
// nothing run) the repositories cannot be asked, so the driver install stays the one planned
// from the host's files — Ubuntu's precompiled modules, not the DKMS fallback.
func TestRecordedInstallKeepsThePlannedPackages(t *testing.T) {
	root := t.TempDir()
	if err := hostconfigtest.Build("ubuntu2204-kubeadm", root, 1); err != nil {
		t.Fatal(err)
	}
	rec := &Recorder{}
	if _, err := Run(context.Background(), &Host{Root: root}, Options{Mode: ModeApply, Node: "n1", Arch: "amd64", Install: Install{DriverBranch: "580"}, Runner: rec}); err != nil {
		t.Fatalf("apply: %v", err)
	}
	var install string
	for _, c := range rec.Commands {
		if j := strings.Join(c, " "); strings.Contains(j, "apt-get") && strings.Contains(j, " install ") {
			install = j
		}
	}
	if !strings.Contains(install, "linux-modules-nvidia-580-server-5.15.0-126-generic nvidia-headless-no-dkms-580-server") {
		t.Errorf("recorded install %q, want the precompiled modules", install)
	}
}

// TestAptProblemKeepsWhy: apt's unmet dependencies and dnf's problems say why an install
// cannot be done; they are kept in the reason, before apt's E: line.
func TestAptProblemKeepsWhy(t *testing.T) {
	apt := `Reading package lists...
Building dependency tree...
Some packages could not be installed. This may mean that you have
requested an impossible situation or if you are using the unstable
distribution that some required packages have not yet been created
or been moved out of Incoming.
The following information may help to resolve the situation:

The following packages have unmet dependencies:
 nvidia-container-toolkit : Depends: libnvidia-container-tools (= 1.17.8-1) but 1.17.7-1 is to be installed
                            Depends: nvidia-container-toolkit-base (= 1.17.8-1) but it is not going to be installed
E: Unable to correct problems, you have held broken packages.
`
	want := "nvidia-container-toolkit : Depends: libnvidia-container-tools (= 1.17.8-1) but 1.17.7-1 is to be installed | " +
		"nvidia-container-toolkit : Depends: nvidia-container-toolkit-base (= 1.17.8-1) but it is not going to be installed | " +
		"E: Unable to correct problems, you have held broken packages."
	if got := managerProblem(apt, nil); got != want {
		t.Errorf("apt:\n%s\nwant\n%s", got, want)
	}
	// A dependency that no source has at all: apt says so in a line of its own.
	missing := `Reading package lists...
Building dependency tree...
Package libnvidia-container1 is not available, but is referred to by another package.
This may mean that the package is missing, has been obsoleted, or
is only available from another source

E: Package 'libnvidia-container1' has no installation candidate
`
	if got := managerProblem(missing, nil); !strings.Contains(got, "Package libnvidia-container1 is not available, but is referred to by another package. | E: Package 'libnvidia-container1' has no installation candidate") {
		t.Errorf("apt, no candidate:\n%s", got)
	}
	dnf := `Last metadata expiration check: 0:00:12 ago.
Error: 
 Problem: cannot install the best candidate for the job
  - nothing provides libnvidia-container-tools = 1.17.8-1 needed by nvidia-container-toolkit-1.17.8-1.x86_64
(try to add '--skip-broken' to skip uninstallable packages or '--nobest' to use not only best candidate packages)
`
	if got, want := managerProblem(dnf, nil), "Problem: cannot install the best candidate for the job | - nothing provides libnvidia-container-tools = 1.17.8-1 needed by nvidia-container-toolkit-1.17.8-1.x86_64"; got != want {
		t.Errorf("dnf:\n%s\nwant\n%s", got, want)
	}
}

// TestInstallUnmetDependency: a repository holding the toolkit 1.17.8-1 but only 1.17.7-1 of
// a package it depends on exactly is refused at plan time with apt's own reason (unpinned:
// the dependency named; pinned: the version apt cannot find), through the real apt-get.
func TestInstallUnmetDependency(t *testing.T) {
	f := newAptFixture(t)
	var pkgs []hostconfigtest.StandIn
	for _, p := range toolkitStandIns("1.17.8-1") {
		if p.Name != "libnvidia-container-tools" {
			pkgs = append(pkgs, p)
		}
	}
	for _, p := range toolkitStandIns("1.17.7-1") {
		if p.Name == "libnvidia-container-tools" || p.Name == "libnvidia-container1" {
			pkgs = append(pkgs, p)
		}
	}
	if err := f.repo.Publish("libnvidia-container/stable/deb/amd64", "libnvidia-container/gpgkey", pkgs...); err != nil {
		t.Fatal(err)
	}
	before, _ := f.host.Read("/var/lib/dpkg/status")
	for _, tc := range []struct{ version, want string }{
		{ToolkitLatest, "nvidia-container-toolkit : Depends: libnvidia-container-tools (= 1.17.8-1) but 1.17.7-1 is to be installed"},
		{"1.17.8", "Version '1.17.8-1' for 'libnvidia-container-tools' was not found"},
	} {
		_, err := f.agent(t, ModePlan, Install{ToolkitVersion: tc.version})
		if err == nil || !strings.Contains(err.Error(), tc.want) || strings.Contains(err.Error(), "\n") {
			t.Errorf("--install-toolkit=%s: %v; want one line with %q", tc.version, err, tc.want)
		}
		t.Log(err)
	}
	nothingChanged(t, f, before)
}

// TestInstallDriverPinned: an exact driver version is installed at the repositories'
// version of it, not the branch's newest (the way back after an upgrade): apt gets
// name=version for the driver's packages (the kernel's modules keep the kernel's version),
// going down from a newer version of the branch too; a version the repositories do not have
// is refused naming what they have, and nothing changes.
func TestInstallDriverPinned(t *testing.T) {
	const running = "6.8.0-45-generic"
	f := newAptFixture(t)
	var archive []hostconfigtest.StandIn
	for _, v := range []string{"570.172.08", "570.195.03"} {
		archive = append(archive,
			hostconfigtest.StandIn{Name: "nvidia-headless-no-dkms-570-server", Version: v + "-0ubuntu0.22.04.1"},
			hostconfigtest.StandIn{Name: "nvidia-utils-570-server", Version: v + "-0ubuntu0.22.04.1"})
	}
	archive = append(archive, hostconfigtest.StandIn{Name: "linux-modules-nvidia-570-server-" + running, Version: "6.8.0-45.45+1"})
	f.ubuntu(t, running, "6.8.0-49-generic", true, archive)

	if _, err := f.agent(t, ModeApply, Install{DriverBranch: "570"}); err != nil {
		t.Fatalf("apply the branch: %v", err)
	}
	if v := f.host.installedVersion("nvidia-headless-no-dkms-570-server", true); v != "570.195.03-0ubuntu0.22.04.1" {
		t.Fatalf("the branch installed %q, want its newest", v)
	}
	plan, err := f.agent(t, ModePlan, Install{DriverBranch: "570.172.08"})
	if err != nil {
		t.Fatalf("plan the pin: %v", err)
	}
	c, ok := installChange(plan, rep.CheckDriver)
	if !ok || len(c.Packages) != 2 {
		t.Fatalf("plan: %+v", plan.Changes)
	}
	for _, p := range c.Packages {
		if p.Version != "570.172.08-0ubuntu0.22.04.1" {
			t.Errorf("plan installs %s %s, want the pinned 570.172.08", p.Name, p.Version)
		}
	}
	if _, err := f.agent(t, ModeApply, Install{DriverBranch: "570.172.08"}); err != nil {
		t.Fatalf("apply the pin: %v", err)
	}
	for _, p := range []string{"nvidia-headless-no-dkms-570-server", "nvidia-utils-570-server"} {
		if v := f.host.installedVersion(p, true); v != "570.172.08-0ubuntu0.22.04.1" {
			t.Errorf("%s installed %q, want the pinned 570.172.08", p, v)
		}
	}
	before, _ := f.host.Read("/var/lib/dpkg/status")
	_, err = f.agent(t, ModeApply, Install{DriverBranch: "570.86.15"})
	if err == nil || !strings.Contains(err.Error(), "no nvidia-headless-no-dkms-570-server of version 570.86.15") || !strings.Contains(err.Error(), "570.195.03-0ubuntu0.22.04.1") {
		t.Errorf("a version the repositories do not have: %v", err)
	}
	if s, _ := f.host.Read("/var/lib/dpkg/status"); s != before {
		t.Error("packages changed on a refused pin")
	}
}
