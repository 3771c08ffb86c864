package hostconfig

import (
	"fmt"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/NVIDIA/nvidia-container-toolkit/pkg/config/toml"
)

// NvidiaRuntimeBinary is where the NVIDIA Container Toolkit installs its runtime.
const NvidiaRuntimeBinary = "/usr/bin/nvidia-container-runtime"

// ContainerdConfig is a parsed containerd config, read and edited with NVIDIA's own TOML
// package (the one nvidia-ctk edits containerd configs with).
type ContainerdConfig struct {
	tree    *toml.Tree
	Version int64
}

// ParseContainerd parses a containerd config. An empty file is a version 2 config.
func ParseContainerd(content string) (*ContainerdConfig, error) {
	t, err := toml.Load(content)
	if err != nil {
		return nil, fmt.Errorf("containerd config does not parse: %w", err)
	}
	c := &ContainerdConfig{tree: t, Version: 2}
	switch v := t.Get("version").(type) {
	case nil:
		if len(t.Keys()) > 0 {
			c.Version = 1
		}
	case int64:
		c.Version = v
	default:
		return nil, fmt.Errorf("containerd config: version is %v, not a number", v)
	}
	if c.Version < 1 || c.Version > 3 {
		return nil, fmt.Errorf("containerd config version %d is not supported (1, 2 or 3)", c.Version)
	}
	return c, nil
}

// criPlugin is the CRI runtime plugin's name for the config version.
func (c *ContainerdConfig) criPlugin() string {
	switch c.Version {
	case 1:
		return "cri"
	case 2:
		return "io.containerd.grpc.v1.cri"
	}
	return "io.containerd.cri.v1.runtime"
}

func (c *ContainerdConfig) runtimesPath() []string {
	return []string{"plugins", c.criPlugin(), "containerd", "runtimes"}
}

func (c *ContainerdConfig) runtimePath(name string, rest ...string) []string {
	return append(append(c.runtimesPath(), name), rest...)
}

// SystemdCgroup returns runc's SystemdCgroup option and whether it is set.
func (c *ContainerdConfig) SystemdCgroup() (bool, bool) {
	v, ok := c.tree.GetPath(c.runtimePath("runc", "options", "SystemdCgroup")).(bool)
	return v, ok
}

// Runtimes lists the configured runtime handlers.
func (c *ContainerdConfig) Runtimes() []string {
	t := c.tree.GetSubtreeByPath(c.runtimesPath())
	if t == nil {
		return nil
	}
	return t.Keys()
}

// RuntimeBinary returns the BinaryName of a runtime ("" when unset or absent).
func (c *ContainerdConfig) RuntimeBinary(name string) (string, bool) {
	if !c.tree.HasPath(c.runtimePath(name)) {
		return "", false
	}
	b, _ := c.tree.GetPath(c.runtimePath(name, "options", "BinaryName")).(string)
	return b, true
}

// DefaultRuntime is default_runtime_name ("runc" when unset).
func (c *ContainerdConfig) DefaultRuntime() string {
	if v, ok := c.tree.GetPath([]string{"plugins", c.criPlugin(), "containerd", "default_runtime_name"}).(string); ok && v != "" {
		return v
	}
	return "runc"
}

// CDIEnabled tells whether containerd's CRI plugin injects CDI devices: enable_cdi, which
// containerd 2 (config version 3) turns on by default and containerd 1.7 (version 2) off.
func (c *ContainerdConfig) CDIEnabled() bool {
	v, set := c.tree.GetPath([]string{"plugins", c.criPlugin(), "enable_cdi"}).(bool)
	if set {
		return v
	}
	return c.Version >= 3
}

// SetSystemdCgroup sets runc's SystemdCgroup (creating the runc runtime entry as containerd's
// defaults have it when missing). It reports whether anything changed.
func (c *ContainerdConfig) SetSystemdCgroup(on bool) bool {
	if v, ok := c.SystemdCgroup(); ok && v == on {
		return false
	}
	c.pinVersion()
	if !c.tree.HasPath(c.runtimePath("runc", "runtime_type")) {
		c.tree.SetPath(c.runtimePath("runc", "runtime_type"), "io.containerd.runc.v2")
	}
	c.tree.SetPath(c.runtimePath("runc", "options", "SystemdCgroup"), on)
	return true
}

// AddNvidiaRuntime adds the "nvidia" runtime as nvidia-ctk does: a copy of runc's settings
// (runtime type, options such as SystemdCgroup) with BinaryName pointing at the NVIDIA
// runtime. The default runtime is left alone (RuntimeClass nvidia selects it). It reports
// whether anything changed.
func (c *ContainerdConfig) AddNvidiaRuntime(binary string) bool {
	if b, ok := c.RuntimeBinary("nvidia"); ok && b == binary {
		return false
	}
	c.pinVersion()
	runc := c.tree.GetSubtreeByPath(c.runtimePath("runc"))
	if runc != nil {
		c.tree.SetPath(c.runtimePath("nvidia"), runc.Copy())
	} else {
		c.tree.SetPath(c.runtimePath("nvidia", "runtime_type"), "io.containerd.runc.v2")
	}
	c.tree.SetPath(c.runtimePath("nvidia", "options", "BinaryName"), binary)
	return true
}

// pinVersion writes the version the edit assumes into a config that has none (an empty
// file), so that containerd and a re-parse read the same plugin paths.
func (c *ContainerdConfig) pinVersion() {
	if c.tree.Get("version") == nil && c.Version >= 2 {
		c.tree.Set("version", c.Version)
	}
}

// String renders the config.
func (c *ContainerdConfig) String() string {
	s := c.tree.String()
	if !strings.HasSuffix(s, "\n") {
		s += "\n"
	}
	return s
}

// Imports lists the config's imports (drop-in files; globs allowed).
func (c *ContainerdConfig) Imports() []string {
	var out []string
	switch v := c.tree.Get("imports").(type) {
	case []any:
		for _, x := range v {
			if s, ok := x.(string); ok {
				out = append(out, s)
			}
		}
	case []string:
		out = v
	}
	return out
}

// mergesPlugins tells whether the installed containerd merges an imported file's plugin
// sections key by key (2.1 and later) or replaces each whole section (before 2.1, see
// containerd issue 5837). The version comes from the host's packages, else from the config's
// version (3: containerd 2, taken as merging; 2: taken as 1.x).
func (h *Host) mergesPlugins(cfg *ContainerdConfig) bool {
	for _, p := range []string{"containerd.io", "containerd"} {
		if v := h.installedVersion(p, true); v != "" {
			v = v[strings.Index(v, ":")+1:]
			f := strings.SplitN(v, ".", 3)
			major, err1 := strconv.Atoi(f[0])
			minor := 0
			var err2 error
			if len(f) > 1 {
				minor, err2 = strconv.Atoi(strings.TrimFunc(f[1], func(r rune) bool { return r < '0' || r > '9' }))
			}
			if err1 == nil && err2 == nil {
				return major > 2 || major == 2 && minor >= 1
			}
		}
	}
	return cfg.Version >= 3
}

// dropIn is a file the root config imports, as containerd reads it.
type dropIn struct {
	path string
	cfg  *ContainerdConfig
}

// loadImports reads the files a config imports, as containerd resolves them: relative to the
// importing file's directory, globs expanded in sorted order, imports of imports followed,
// each file once. A file that is not there or does not parse is an error: containerd does
// not start with it.
func (h *Host) loadImports(file string, cfg *ContainerdConfig, seen map[string]bool) ([]dropIn, error) {
	var out []dropIn
	for _, imp := range cfg.Imports() {
		if !filepath.IsAbs(imp) {
			imp = filepath.Join(filepath.Dir(file), imp)
		}
		paths := []string{imp}
		if strings.ContainsAny(imp, "*?[") {
			paths = h.Glob(imp)
		}
		for _, p := range paths {
			if seen[p] {
				continue
			}
			seen[p] = true
			s, ok := h.Read(p)
			if !ok {
				return nil, fmt.Errorf("imports %s, which is not there: containerd does not start", p)
			}
			c, err := ParseContainerd(s)
			if err != nil {
				return nil, fmt.Errorf("%s: %w", p, err)
			}
			out = append(out, dropIn{path: p, cfg: c})
			more, err := h.loadImports(p, c, seen)
			if err != nil {
				return nil, err
			}
			out = append(out, more...)
		}
	}
	return out, nil
}

// Effective is the config containerd runs with: the root config with its imports merged in
// order. Before 2.1 containerd replaces a plugin's whole section with an import's (its
// mergeConfig); from 2.1 it merges them key by key.
func Effective(root *ContainerdConfig, imports []*ContainerdConfig, wholeSections bool) (*ContainerdConfig, error) {
	m := root.tree.ToMap()
	for _, c := range imports {
		from := c.tree.ToMap()
		if wholeSections {
			if fp, ok := from["plugins"].(map[string]any); ok {
				tp, _ := m["plugins"].(map[string]any)
				if tp == nil {
					tp = map[string]any{}
				}
				for k, v := range fp {
					tp[k] = v
				}
				m["plugins"] = tp
				delete(from, "plugins")
			}
		}
		mergeMaps(m, from)
	}
	t, err := toml.TreeFromMap(m)
	if err != nil {
		return nil, err
	}
	return &ContainerdConfig{tree: t, Version: root.Version}, nil
}

func mergeMaps(to, from map[string]any) {
	for k, v := range from {
		if k == "version" || k == "imports" {
			continue
		}
		fm, fok := v.(map[string]any)
		tm, tok := to[k].(map[string]any)
		if fok && tok {
			mergeMaps(tm, fm)
			continue
		}
		to[k] = v
	}
}
