package hostconfigtest

import (
	"bytes"
	"context"
	"crypto"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/ProtonMail/go-crypto/openpgp"
	"github.com/ProtonMail/go-crypto/openpgp/armor"
	"github.com/ProtonMail/go-crypto/openpgp/clearsign"
	"github.com/ProtonMail/go-crypto/openpgp/packet"
)

// DebianRootTar is the Debian bookworm root tarball hack/testenv/debian-root.sh builds (dpkg,
// apt, gpgv), or "" when it has not been built.
func DebianRootTar() string {
	dir := os.Getenv("KGPU_CACHE_DIR")
	if dir == "" {
		c, err := os.UserCacheDir()
		if err != nil {
			return ""
		}
		dir = filepath.Join(c, "kubectl-gpu")
	}
	p := filepath.Join(dir, "debian-root", "bookworm-apt.tar")
	if _, err := os.Stat(p); err != nil {
		return ""
	}
	return p
}

// UnpackDebianRoot unpacks the tarball into dst and leaves it no apt source (the tests add
// their own, on 127.0.0.1) and a running kernel release of kernel.
func UnpackDebianRoot(tarball, dst, kernel string) error {
	if out, err := exec.Command("tar", "-x", "-p", "-f", tarball, "-C", dst).CombinedOutput(); err != nil {
		return fmt.Errorf("unpack %s: %v: %s", tarball, err, out)
	}
	for _, p := range []string{"etc/apt/sources.list", "etc/apt/sources.list.d/debian.sources"} {
		os.Remove(filepath.Join(dst, p))
	}
	return writeFile(filepath.Join(dst, "proc/sys/kernel/osrelease"), kernel+"\n")
}

// Chroot runs host commands inside a root with chroot(2): the real programs of that root
// (apt-get, dpkg) against its own files. It is the tests' stand-in for the agent's nsenter
// into PID 1's namespaces.
type Chroot struct {
	Root string
	mu   sync.Mutex
	// Ran lists the commands run.
	Ran [][]string
}

// Run runs argv in the root.
func (c *Chroot) Run(ctx context.Context, argv ...string) (string, error) {
	c.mu.Lock()
	c.Ran = append(c.Ran, argv)
	c.mu.Unlock()
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Chroot: c.Root}
	cmd.Dir = "/"
	cmd.Env = []string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin", "LANG=C", "HOME=/root"}
	out, err := cmd.CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("%v: %w", argv, err)
	}
	return string(out), nil
}

// Note: the commands ran, in a chroot.
func (c *Chroot) Note() string { return "" }

// StandIn is a labelled stand-in package: it carries NVIDIA's package name and installs
// small files (scripts that say what they are), not a driver or a toolkit.
type StandIn struct {
	Name, Version string
	Depends       string
	// Conflicts: packages it cannot be installed beside (another driver branch's); apt
	// removes them when it is installed.
	Conflicts string
	// Files maps a path to its content (mode 0755).
	Files map[string]string
}

// BuildDeb builds the stand-in with dpkg-deb into dir and returns the .deb's path.
func BuildDeb(dir string, s StandIn) (string, error) {
	tree, err := os.MkdirTemp(dir, "pkg-")
	if err != nil {
		return "", err
	}
	defer os.RemoveAll(tree)
	control := fmt.Sprintf("Package: %s\nVersion: %s\nArchitecture: amd64\nMaintainer: kubectl-gpu tests <tests@kubectl-gpu.invalid>\n", s.Name, s.Version)
	if s.Depends != "" {
		control += "Depends: " + s.Depends + "\n"
	}
	if s.Conflicts != "" {
		control += "Conflicts: " + s.Conflicts + "\n"
	}
	control += "Description: stand-in for NVIDIA's " + s.Name + " (kubectl-gpu tests)\n installs files, not a driver or a toolkit\n"
	if err := writeFile(filepath.Join(tree, "DEBIAN", "control"), control); err != nil {
		return "", err
	}
	for p, c := range s.Files {
		if err := writeFile(filepath.Join(tree, p), c); err != nil {
			return "", err
		}
		if err := os.Chmod(filepath.Join(tree, p), 0o755); err != nil {
			return "", err
		}
	}
	deb := filepath.Join(dir, s.Name+"_"+s.Version+"_amd64.deb")
	if out, err := exec.Command("dpkg-deb", "--root-owner-group", "-Zgzip", "--build", tree, deb).CombinedOutput(); err != nil {
		return "", fmt.Errorf("dpkg-deb: %v: %s", err, out)
	}
	return deb, nil
}

// DpkgInstall builds the stand-ins and installs them into the root with its own dpkg, as
// packages the host already has (such as its kernel and kernel metapackage).
func DpkgInstall(ctx context.Context, root string, pkgs ...StandIn) error {
	dir, err := os.MkdirTemp(filepath.Join(root, "tmp"), "stand-ins-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	args := []string{"dpkg", "-i"}
	for _, p := range pkgs {
		deb, err := BuildDeb(dir, p)
		if err != nil {
			return err
		}
		args = append(args, strings.TrimPrefix(deb, filepath.Clean(root)))
	}
	if out, err := (&Chroot{Root: root}).Run(ctx, args...); err != nil {
		return fmt.Errorf("%v\n%s", err, out)
	}
	return nil
}

// UbuntuKernel is the stand-ins of an Ubuntu host's kernel packages: the kernel image
// (no files) and the metapackage that brings its upgrades, such as linux-image-generic.
func UbuntuKernel(kernel, meta string) []StandIn {
	return []StandIn{
		{Name: "linux-image-" + kernel, Version: kernel + ".1"},
		{Name: meta, Version: kernel + ".1", Depends: "linux-image-" + kernel},
	}
}

// AptRepo is a set of flat apt repositories on 127.0.0.1, signed with a key it makes.
type AptRepo struct {
	Dir    string
	Server *httptest.Server
	key    *openpgp.Entity
	mu     sync.Mutex
	down   bool
}

// NewAptRepo makes the signing key and serves dir on a free loopback port.
func NewAptRepo(dir string) (*AptRepo, error) { return NewAptRepoAt(dir, "") }

// NewAptRepoAt is NewAptRepo on addr ("127.0.0.1:PORT"; "" a free port).
func NewAptRepoAt(dir, addr string) (*AptRepo, error) {
	cfg := &packet.Config{Algorithm: packet.PubKeyAlgoRSA, RSABits: 2048, DefaultHash: crypto.SHA256}
	e, err := openpgp.NewEntity("kubectl-gpu test repository", "stand-in packages", "tests@kubectl-gpu.invalid", cfg)
	if err != nil {
		return nil, err
	}
	r := &AptRepo{Dir: dir, key: e}
	files := http.FileServer(http.Dir(dir))
	r.Server = httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		r.mu.Lock()
		down := r.down
		r.mu.Unlock()
		if down {
			http.Error(w, "down for the test", http.StatusServiceUnavailable)
			return
		}
		files.ServeHTTP(w, req)
	}))
	if addr != "" {
		l, err := net.Listen("tcp", addr)
		if err != nil {
			return nil, fmt.Errorf("serve the repositories on %s: %w", addr, err)
		}
		r.Server.Listener.Close()
		r.Server.Listener = l
	}
	r.Server.Start()
	return r, nil
}

// Close stops the server.
func (r *AptRepo) Close() { r.Server.Close() }

// SetDown makes every request fail (503) or serves again.
func (r *AptRepo) SetDown(down bool) { r.mu.Lock(); r.down = down; r.mu.Unlock() }

// URL is the server's base URL.
func (r *AptRepo) URL() string { return r.Server.URL }

// PublicKey is the signing key, armored.
func (r *AptRepo) PublicKey() []byte { return ArmoredKey(r.key) }

// ArmoredKey serializes an entity's public key, armored.
func ArmoredKey(e *openpgp.Entity) []byte {
	var b bytes.Buffer
	w, _ := armor.Encode(&b, openpgp.PublicKeyType, nil)
	_ = e.Serialize(w)
	w.Close()
	return b.Bytes()
}

// OtherKey is a key that signs nothing of the repository's.
func OtherKey() []byte {
	e, _ := openpgp.NewEntity("someone else", "", "other@kubectl-gpu.invalid", &packet.Config{Algorithm: packet.PubKeyAlgoRSA, RSABits: 2048})
	return ArmoredKey(e)
}

// Publish writes a flat repository at path (Packages, Release, a clearsigned InRelease)
// holding the packages, and the key at keyPath (armored), both under the served dir.
func (r *AptRepo) Publish(path, keyPath string, pkgs ...StandIn) error {
	dir := filepath.Join(r.Dir, path)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	var index strings.Builder
	sort.Slice(pkgs, func(i, j int) bool { return pkgs[i].Name+pkgs[i].Version < pkgs[j].Name+pkgs[j].Version })
	for _, p := range pkgs {
		deb, err := BuildDeb(dir, p)
		if err != nil {
			return err
		}
		ctl, err := exec.Command("dpkg-deb", "-f", deb).Output()
		if err != nil {
			return fmt.Errorf("dpkg-deb -f %s: %w", deb, err)
		}
		b, err := os.ReadFile(deb)
		if err != nil {
			return err
		}
		sum := sha256.Sum256(b)
		fmt.Fprintf(&index, "%sFilename: ./%s\nSize: %d\nSHA256: %s\n\n", ctl, filepath.Base(deb), len(b), hex.EncodeToString(sum[:]))
	}
	if err := writeFile(filepath.Join(dir, "Packages"), index.String()); err != nil {
		return err
	}
	sum := sha256.Sum256([]byte(index.String()))
	release := fmt.Sprintf("Origin: kubectl-gpu tests\nLabel: stand-in packages\nDate: %s\nSHA256:\n %s %d Packages\n",
		time.Now().UTC().Add(-time.Hour).Format(time.RFC1123), hex.EncodeToString(sum[:]), index.Len())
	if err := writeFile(filepath.Join(dir, "Release"), release); err != nil {
		return err
	}
	var signed bytes.Buffer
	w, err := clearsign.Encode(&signed, r.key.PrivateKey, &packet.Config{DefaultHash: crypto.SHA256})
	if err != nil {
		return err
	}
	if _, err := w.Write([]byte(release)); err != nil {
		return err
	}
	if err := w.Close(); err != nil {
		return err
	}
	if err := writeFile(filepath.Join(dir, "InRelease"), signed.String()); err != nil {
		return err
	}
	if keyPath != "" {
		return writeFile(filepath.Join(r.Dir, keyPath), string(r.PublicKey()))
	}
	return nil
}

func writeFile(p, content string) error {
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		return err
	}
	return os.WriteFile(p, []byte(content), 0o644)
}
