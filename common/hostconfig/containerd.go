package hostconfig

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"

	ctkcontainerd "github.com/NVIDIA/nvidia-container-toolkit/pkg/config/engine/containerd"
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
	if c.Version < 1 || c.Version > 4 {
		return nil, fmt.Errorf("containerd config version %d is not one containerd has (1 to 4; 4 is containerd 2.3's)", c.Version)
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
	return "io.containerd.cri.v1.runtime" // versions 3 and 4 (containerd 2)
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

// dropIn is a file the root config imports, as containerd reads it.
type dropIn struct {
	path string
	cfg  *ContainerdConfig
}

// rewriteDropIn writes a drop-in of another config version than the root's in the root's
// schema, as NVIDIA's engine (nvidia-ctk runtime configure) writes it against that root:
// the root's CRI section with the drop-in's NVIDIA runtimes added (and its default runtime
// and enable_cdi carried over). A drop-in that configures anything else is refused: the
// rewrite would lose it.
func rewriteDropIn(root, d *ContainerdConfig) (string, error) {
	if root.Version < 2 {
		return "", fmt.Errorf("a version 1 root reads no drop-ins")
	}
	from := d.criPlugin()
	for _, k := range d.tree.Keys() {
		if k != "version" && k != "plugins" {
			return "", fmt.Errorf("it sets %s, which a rewrite would lose", k)
		}
	}
	if p := d.tree.GetSubtreeByPath([]string{"plugins"}); p != nil {
		for _, k := range p.Keys() {
			if k != from {
				return "", fmt.Errorf("it configures the plugin %s, not only the CRI runtimes", k)
			}
		}
	}
	type runtime struct{ name, binary string }
	var add []runtime
	for _, name := range d.Runtimes() {
		b, _ := d.RuntimeBinary(name)
		switch {
		case strings.Contains(b, "nvidia-container-runtime"):
			add = append(add, runtime{name, b})
		case name == "runc":
			// nvidia-ctk copies the root's whole CRI section into its drop-in: runc is
			// the root's, which the rewrite copies again from the root.
		default:
			if _, ok := root.RuntimeBinary(name); !ok {
				return "", fmt.Errorf("it configures the runtime %s, which is not NVIDIA's", name)
			}
		}
	}
	if len(add) == 0 {
		return "", fmt.Errorf("it configures no NVIDIA runtime")
	}
	dir, err := os.MkdirTemp("", "kubectl-gpu-dropin-")
	if err != nil {
		return "", err
	}
	defer os.RemoveAll(dir)
	top := filepath.Join(dir, "config.toml")
	if err := os.WriteFile(top, []byte(root.String()), 0o600); err != nil {
		return "", err
	}
	eng, err := ctkcontainerd.New(ctkcontainerd.WithLogger(quiet{}), ctkcontainerd.WithTopLevelConfigPath(top), ctkcontainerd.WithConfigSource(toml.FromString(root.String())))
	if err != nil {
		return "", fmt.Errorf("NVIDIA's engine: %w", err)
	}
	def := d.DefaultRuntime()
	for _, r := range add {
		if err := eng.AddRuntime(r.name, r.binary, r.name == def); err != nil {
			return "", fmt.Errorf("NVIDIA's engine: %w", err)
		}
	}
	if v, ok := d.tree.GetPath([]string{"plugins", from, "enable_cdi"}).(bool); ok && v {
		eng.EnableCDI()
	} else if ok {
		return "", fmt.Errorf("it sets enable_cdi = false, which NVIDIA's engine does not write")
	}
	out := filepath.Join(dir, "conf.d", "drop-in.toml")
	if err := os.MkdirAll(filepath.Dir(out), 0o700); err != nil {
		return "", err
	}
	if _, err := eng.Save(out); err != nil {
		return "", fmt.Errorf("NVIDIA's engine: %w", err)
	}
	b, err := os.ReadFile(out)
	if err != nil {
		return "", err
	}
	again, err := ParseContainerd(string(b))
	if err != nil || again.Version != root.Version {
		return "", fmt.Errorf("NVIDIA's engine wrote a file of another version")
	}
	for _, r := range add {
		if got, _ := again.RuntimeBinary(r.name); got != r.binary {
			return "", fmt.Errorf("NVIDIA's engine did not keep the runtime %s", r.name)
		}
	}
	return string(b), nil
}
