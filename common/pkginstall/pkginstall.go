// Package pkginstall is what `kubectl gpu prep --install-driver / --install-toolkit` asks
// of a node, shared by the plugin (which validates it and passes it to the node agent) and
// the agent (which carries it out: common/hostconfig). Pure Go: no host access.
package pkginstall

import (
	"bytes"
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"time"

	"github.com/ProtonMail/go-crypto/openpgp"
	"github.com/ProtonMail/go-crypto/openpgp/armor"
)

// Install says which host packages prep installs: the NVIDIA driver (a branch) and the
// NVIDIA Container Toolkit (a version). The zero value installs nothing.
type Install struct {
	// DriverBranch is the driver branch ("580"), or an exact driver version ("580.95.05",
	// see DriverVersion); "" installs no driver.
	DriverBranch string
	// ToolkitVersion pins the toolkit ("1.17.8" or "1.17.8-1"); "latest" takes the
	// repository's newest; "" installs no toolkit.
	ToolkitVersion string
	// Repo is a mirror that keeps NVIDIA's paths (REPO/libnvidia-container/…,
	// REPO/compute/cuda/repos/…) in place of nvidia.github.io and
	// developer.download.nvidia.com; "" uses NVIDIA's.
	Repo string
	// Key is the repositories' signing key (armored or binary); nil fetches the key the
	// repository publishes beside it.
	Key []byte
	// LockTimeout is how long a package manager held by another process is waited for.
	LockTimeout time.Duration
	// HTTP fetches keys (nil: http.DefaultClient).
	HTTP *http.Client
}

// Branch is the driver branch asked for ("580" of "580" or of "580.95.05").
func (i Install) Branch() string {
	b, _, _ := strings.Cut(i.DriverBranch, ".")
	return b
}

// DriverVersion is the exact driver version asked for ("580.95.05": its packages pinned to
// it, so that the package manager does not take the branch's newest), "" for a branch.
func (i Install) DriverVersion() string {
	if strings.Contains(i.DriverBranch, ".") {
		return i.DriverBranch
	}
	return ""
}

// Any tells whether anything is to be installed.
func (i Install) Any() bool { return i.DriverBranch != "" || i.ToolkitVersion != "" }

// DefaultDriverBranch is the branch --install-driver takes without one: NVIDIA's current
// production branch with Ubuntu's signed precompiled -server modules.
const DefaultDriverBranch = "580"

// InstallGrace is how long an agent that installs packages is given to stop (its pod's
// termination grace period): a package manager it has started finishes first — a driver
// built by DKMS takes minutes — since one killed mid-way leaves dpkg's work half done.
const InstallGrace = 10 * time.Minute

// ToolkitLatest asks for the repository's newest toolkit.
const ToolkitLatest = "latest"

var (
	branchRE  = regexp.MustCompile(`^[0-9]{3}$`)
	driverRE  = regexp.MustCompile(`^[0-9]{3}(\.[0-9]+){1,2}$`)
	versionRE = regexp.MustCompile(`^[0-9]+\.[0-9]+\.[0-9]+(~rc\.[0-9]+)?(-[0-9]+)?$`)
)

// UnsupportedOS is in the error of a host whose system package installs do not support.
const UnsupportedOS = "is not supported for package installs"

// SupportedOS names the systems package installs support.
const SupportedOS = "Ubuntu 20.04/22.04/24.04, Debian 11/12 (apt), RHEL-compatible 8/9 (dnf)"

// Validate checks an Install's branch, version, mirror URL and key.
func Validate(i Install) error {
	if i.DriverBranch != "" && !branchRE.MatchString(i.DriverBranch) && !driverRE.MatchString(i.DriverBranch) {
		return fmt.Errorf("driver %q is not a branch number such as %s, nor a driver version such as 580.95.05", i.DriverBranch, DefaultDriverBranch)
	}
	if i.ToolkitVersion != "" && i.ToolkitVersion != ToolkitLatest && !versionRE.MatchString(i.ToolkitVersion) {
		return fmt.Errorf("toolkit version %q is not a version such as 1.17.8 or 1.17.8-1 (or %q)", i.ToolkitVersion, ToolkitLatest)
	}
	if i.Repo != "" {
		u, err := url.Parse(i.Repo)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.RawQuery != "" || u.Fragment != "" {
			return fmt.Errorf("package mirror %q is not an http(s) URL such as https://mirror.example/nvidia", i.Repo)
		}
	}
	if len(i.Key) > 0 {
		if _, err := ReadKey(i.Key); err != nil {
			return fmt.Errorf("package key: %w", err)
		}
	}
	return nil
}

// Key is a signing key read from a keyring.
type Key struct {
	Binary       []byte // dearmored, as gpg --dearmor writes it
	Fingerprints []string
}

// ReadKey reads an OpenPGP public key (armored or binary).
func ReadKey(b []byte) (Key, error) {
	var ki Key
	raw := b
	if blk, err := armor.Decode(bytes.NewReader(b)); err == nil {
		if raw, err = io.ReadAll(blk.Body); err != nil {
			return ki, fmt.Errorf("not an OpenPGP key: %w", err)
		}
	}
	ents, err := openpgp.ReadKeyRing(bytes.NewReader(raw))
	if err != nil || len(ents) == 0 {
		return ki, fmt.Errorf("not an OpenPGP public key (armored or binary)")
	}
	ki.Binary = raw
	for _, e := range ents {
		ki.Fingerprints = append(ki.Fingerprints, strings.ToUpper(hex.EncodeToString(e.PrimaryKey.Fingerprint)))
	}
	return ki, nil
}
