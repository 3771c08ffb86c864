// Package hostconfig checks and prepares a GPU node's host configuration from a mounted
// host root (the node agent runs with the host's / at /host). Every read goes through the
// root, so tests use fake host roots built from real files; every write is atomic, backed
// up and idempotent; host commands go through a Runner that tests replace with a recorder.
package hostconfig

import (
	"bufio"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
)

// Host is a host root.
type Host struct {
	Root string
	// Exec runs the host's own programs that only read (containerd's config loader). nil,
	// or a runner that does not really run commands: the tool's model answers instead, and
	// the report says so.
	Exec Runner
	// ran keeps what running the host's containerd for its version said, per binary.
	ran map[string]runResult
}

// Path returns the path of a host file under the root.
func (h *Host) Path(p string) string { return filepath.Join(h.Root, p) }

// Read returns a host file's content ("" and false when it does not exist).
func (h *Host) Read(p string) (string, bool) {
	b, err := os.ReadFile(h.Path(p))
	if err != nil {
		return "", false
	}
	return string(b), true
}

// Exists tells whether a host path exists (links are not followed: a dangling link to a
// path valid only on the host still counts).
func (h *Host) Exists(p string) bool {
	_, err := os.Lstat(h.Path(p))
	return err == nil
}

// Glob lists host paths matching pattern, as host paths, sorted.
func (h *Host) Glob(pattern string) []string {
	m, _ := filepath.Glob(h.Path(pattern))
	out := make([]string, 0, len(m))
	for _, p := range m {
		rel, err := filepath.Rel(h.Root, p)
		if err == nil {
			out = append(out, "/"+rel)
		}
	}
	sort.Strings(out)
	return out
}

// Lines returns the non-empty, non-comment lines of a host file.
func (h *Host) Lines(p string) []string {
	s, _ := h.Read(p)
	return contentLines(s)
}

func contentLines(s string) []string {
	var out []string
	sc := bufio.NewScanner(strings.NewReader(s))
	for sc.Scan() {
		l := strings.TrimSpace(sc.Text())
		if l == "" || strings.HasPrefix(l, "#") || strings.HasPrefix(l, ";") {
			continue
		}
		out = append(out, l)
	}
	return out
}

// OSRelease parses /etc/os-release (or /usr/lib/os-release).
func (h *Host) OSRelease() map[string]string {
	s, ok := h.Read("/etc/os-release")
	if !ok {
		s, _ = h.Read("/usr/lib/os-release")
	}
	m := map[string]string{}
	for _, l := range contentLines(s) {
		k, v, ok := strings.Cut(l, "=")
		if ok {
			m[k] = strings.Trim(v, `"'`)
		}
	}
	return m
}

// Kernel is the running kernel's release.
func (h *Host) Kernel() string {
	s, _ := h.Read("/proc/sys/kernel/osrelease")
	return strings.TrimSpace(s)
}

// BootID is the host's boot ID, as the kubelet reports it.
func (h *Host) BootID() string {
	s, _ := h.Read("/proc/sys/kernel/random/boot_id")
	return strings.TrimSpace(s)
}

// LoadedModules returns the modules in /proc/modules.
func (h *Host) LoadedModules() map[string]bool {
	m := map[string]bool{}
	for _, l := range h.Lines("/proc/modules") {
		if f := strings.Fields(l); len(f) > 0 {
			m[f[0]] = true
		}
	}
	return m
}

// ErrNotExist is returned for files that are missing.
var ErrNotExist = fs.ErrNotExist

func isNotExist(err error) bool { return errors.Is(err, fs.ErrNotExist) }
