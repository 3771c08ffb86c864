package hostconfig

import (
	"fmt"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"

	"github.com/NVIDIA/nvidia-container-toolkit/pkg/config/toml"
)

// How containerd loads its configuration, release by release, from containerd's source
// (docs/doctor.md, "How containerd loads its configuration", says the same for a reader):
//
//   - Every release reads the root file, then the files it imports in the order it names
//     them (a relative path is relative to the importing file's directory; a path with "*"
//     is a glob, expanded in sorted order; anything else must exist), then their imports, one
//     level after the other (a queue: services/server/config.LoadConfig in 1.x,
//     cmd/containerd/server/config.LoadConfigWithPlugins in 2.x). A file is read once.
//   - A file's version replaces the version read so far (mergo.WithOverride): the last file
//     that names a version decides it.
//   - 1.x (mergeConfig): an imported file's plugin section replaces the whole section of that
//     plugin. 1.6.32 and 1.7.17 (containerd PR #10165) refuse a version above 2
//     ("unsupported config version `3`"); 1.7.16 and older accept it and still read the CRI
//     plugin at version 2's name, io.containerd.grpc.v1.cri, ignoring
//     io.containerd.cri.v1.runtime. At version 2 every plugin key must be a full URI.
//   - 2.0 (commit a21e379b6, "Allow sections of Plugins to be merged", first released in
//     v2.0.0): plugin sections merge key by key. 2.0 to 2.2 read config version 3; they
//     migrate the merged configuration once, after every file is read, when the last version
//     named is below 3: the CRI plugin's migration copies io.containerd.grpc.v1.cri into
//     io.containerd.cri.v1.runtime where that has no such key (a runtimes table already there
//     keeps only its own runtimes). A version above 3 is refused ("expected containerd config
//     version equal to or less than `3`").
//   - 2.3 (commit 0d7fee062, "Update plugin config migration to run on load") reads version
//     4 (the server's own settings moved into plugin sections; the CRI plugin names are
//     version 3's) and migrates each file to 4 before it merges it, so an older drop-in's
//     runtimes are merged, not lost.
//
// Where the host's containerd can be run, it is the judge (containerdJudge): these rules are
// the answer only where it cannot (a distroless host, the simulated hosts), and the report
// says so.

// ContainerdRelease is a containerd version.
type ContainerdRelease struct{ Major, Minor, Patch int }

var releaseRE = regexp.MustCompile(`(?:^|[^0-9.])v?([12])\.([0-9]+)(?:\.([0-9]+))?`)

// ParseContainerdRelease reads a version as `containerd --version` or a package manager
// prints it ("containerd github.com/containerd/containerd v1.7.24 …", "1.7.24-1",
// "1:2.1.4~ds1-1", "2.0.5-k3s1").
func ParseContainerdRelease(s string) (ContainerdRelease, bool) {
	if i := strings.Index(s, ":"); i >= 0 && i < 3 {
		s = s[i+1:] // a Debian epoch
	}
	m := releaseRE.FindStringSubmatch(s)
	if m == nil {
		return ContainerdRelease{}, false
	}
	var v ContainerdRelease
	v.Major, _ = strconv.Atoi(m[1])
	v.Minor, _ = strconv.Atoi(m[2])
	v.Patch, _ = strconv.Atoi(m[3])
	return v, true
}

func (v ContainerdRelease) String() string { return fmt.Sprintf("%d.%d.%d", v.Major, v.Minor, v.Patch) }

func (v ContainerdRelease) atLeast(major, minor, patch int) bool {
	if v.Major != major {
		return v.Major > major
	}
	if v.Minor != minor {
		return v.Minor > minor
	}
	return v.Patch >= patch
}

// ConfigVersion is the newest config version the release reads.
func (v ContainerdRelease) ConfigVersion() int {
	switch {
	case v.Major < 2:
		return 2
	case v.atLeast(2, 3, 0):
		return 4
	}
	return 3
}

// refusesAbove2: a 1.x release that refuses a config version above 2 (PR #10165).
func (v ContainerdRelease) refusesAbove2() bool {
	return v.Major < 2 && (v.Minor == 6 && v.Patch >= 32 || v.Minor == 7 && v.Patch >= 17 || v.Minor > 7)
}

// criPlugin is where the release's CRI plugin reads its runtimes at the loaded version.
func (v ContainerdRelease) criPlugin(loadedVersion int) string {
	switch {
	case v.Major >= 2:
		return "io.containerd.cri.v1.runtime"
	case loadedVersion <= 1:
		return "cri"
	}
	return "io.containerd.grpc.v1.cri"
}

// ContainerdLoad is what a containerd release makes of a host's configuration files.
type ContainerdLoad struct {
	Release ContainerdRelease
	// Files in the order containerd read them.
	Files []string
	// Version is the config version it runs with.
	Version int
	// Err is the loader's refusal: containerd does not start. ErrFile is the file that
	// causes it ("" when the set does).
	Err     error
	ErrFile string
	// CRI is the CRI runtime plugin's section as the release reads it (nil: none).
	CRI map[string]any
	// PerFile holds each file's own plugin sections, to say which file sets what.
	PerFile map[string]*ContainerdConfig
	// missing is an imported file that is not there ("" none).
	missing string
}

// Loads tells whether containerd starts with the files.
func (l *ContainerdLoad) Loads() bool { return l.Err == nil }

func (l *ContainerdLoad) runtime(name string) (map[string]any, bool) {
	c, _ := l.CRI["containerd"].(map[string]any)
	rts, _ := c["runtimes"].(map[string]any)
	rt, ok := rts[name].(map[string]any)
	return rt, ok
}

// RuntimeBinary is the runtime's BinaryName as loaded, and whether the runtime is there.
func (l *ContainerdLoad) RuntimeBinary(name string) (string, bool) {
	rt, ok := l.runtime(name)
	opts, _ := rt["options"].(map[string]any)
	b, _ := opts["BinaryName"].(string)
	return b, ok
}

// SystemdCgroup is runc's SystemdCgroup as loaded (false when unset: every release's default).
func (l *ContainerdLoad) SystemdCgroup() bool {
	rt, _ := l.runtime("runc")
	opts, _ := rt["options"].(map[string]any)
	v, _ := opts["SystemdCgroup"].(bool)
	return v
}

// DefaultRuntime is default_runtime_name ("runc" when unset).
func (l *ContainerdLoad) DefaultRuntime() string {
	c, _ := l.CRI["containerd"].(map[string]any)
	if v, _ := c["default_runtime_name"].(string); v != "" {
		return v
	}
	return "runc"
}

// CDIEnabled is enable_cdi as loaded (on by default from containerd 2.0).
func (l *ContainerdLoad) CDIEnabled() bool {
	if v, ok := l.CRI["enable_cdi"].(bool); ok {
		return v
	}
	return l.Release.Major >= 2
}

// ModelLoad loads the configuration at path as the release's loader does, through the host
// root. It never fails: a refusal is in Err.
func (h *Host) ModelLoad(path string, rel ContainerdRelease) *ContainerdLoad {
	l := &ContainerdLoad{Release: rel, PerFile: map[string]*ContainerdConfig{}}
	plugins := map[string]any{}
	version := 0
	if rel.Major >= 2 {
		version = rel.ConfigVersion() // the defaults' version, which a file's replaces
	}
	versionFile := ""
	loaded := map[string]bool{}
	pending := []string{path}
	for len(pending) > 0 {
		p := pending[0]
		pending = pending[1:]
		if loaded[p] {
			continue
		}
		content, ok := h.Read(p)
		if !ok {
			l.Err, l.ErrFile, l.missing = fmt.Errorf("imports %s, which is not there: containerd does not start", p), p, p
			return l
		}
		t, err := toml.Load(content)
		if err != nil {
			l.Err, l.ErrFile = fmt.Errorf("%s does not parse: %w", p, err), p
			return l
		}
		fv := 0
		switch v := t.Get("version").(type) {
		case int64:
			fv = int(v)
		case nil:
		default:
			l.Err, l.ErrFile = fmt.Errorf("%s: version is %v, not a number", p, v), p
			return l
		}
		if c, err := ParseContainerd(content); err == nil {
			l.PerFile[p] = c
		}
		from, _ := t.ToMap()["plugins"].(map[string]any)
		if from == nil {
			from = map[string]any{}
		}
		switch {
		case rel.Major < 2:
			for k, v := range from {
				plugins[k] = v // a whole section replaced
			}
		case rel.atLeast(2, 3, 0):
			if fv < version {
				migratePlugins(from, fv)
				fv = version
			}
			mergeDeep(plugins, from)
		default:
			if fv <= 1 {
				migrateV1Names(from)
				fv = version
			}
			mergeDeep(plugins, from)
		}
		if fv != 0 {
			version, versionFile = fv, p
		}
		loaded[p] = true
		l.Files = append(l.Files, p)
		pending = append(pending, h.resolveImports(p, t)...)
	}
	if version == 0 {
		version = 1
	}
	l.Version = version
	switch {
	case rel.Major < 2 && rel.refusesAbove2() && version > 2:
		l.Err, l.ErrFile = fmt.Errorf("unsupported config version `%d` (from %s)", version, versionFile), versionFile
		return l
	case rel.Major < 2 && version >= 2:
		for k := range plugins {
			if !strings.HasPrefix(k, "io.containerd.") || len(strings.SplitN(k, ".", 4)) < 4 {
				l.Err = fmt.Errorf("invalid plugin key URI %q expect io.containerd.x.vx (a version 1 section in a version %d configuration)", k, version)
				return l
			}
		}
	case rel.Major >= 2 && version > rel.ConfigVersion():
		l.Err, l.ErrFile = fmt.Errorf("expected containerd config version equal to or less than `%d`, got `%d` (from %s)", rel.ConfigVersion(), version, versionFile), versionFile
		return l
	case rel.Major >= 2 && !rel.atLeast(2, 3, 0) && version < rel.ConfigVersion():
		migratePlugins(plugins, 2)
	}
	l.CRI, _ = plugins[rel.criPlugin(version)].(map[string]any)
	return l
}

// resolveImports lists a file's imports as containerd resolves them.
func (h *Host) resolveImports(parent string, t *toml.Tree) []string {
	var imps []string
	switch v := t.Get("imports").(type) {
	case []any:
		for _, x := range v {
			if s, ok := x.(string); ok {
				imps = append(imps, s)
			}
		}
	case []string:
		imps = v
	}
	var out []string
	for _, p := range imps {
		p = filepath.Clean(p)
		if !filepath.IsAbs(p) {
			p = filepath.Join(filepath.Dir(parent), p)
		}
		if strings.Contains(p, "*") {
			out = append(out, h.Glob(p)...)
		} else {
			out = append(out, p)
		}
	}
	return out
}

// migrateV1Names renames a version 1 file's short plugin names to their URIs, as 2.x's
// v1 migration does for the plugins this tool reads.
func migrateV1Names(plugins map[string]any) {
	if v, ok := plugins["cri"]; ok {
		delete(plugins, "cri")
		plugins["io.containerd.grpc.v1.cri"] = v
	}
}

// migratePlugins migrates plugin sections from config version from to the runtime plugin's
// version 3 names, as the CRI plugin's config migration does (plugins/cri/runtime): a key of
// io.containerd.grpc.v1.cri, and of its containerd table, is copied where the new section
// has none.
func migratePlugins(plugins map[string]any, from int) {
	if from <= 1 {
		migrateV1Names(plugins)
	}
	src, ok := plugins["io.containerd.grpc.v1.cri"].(map[string]any)
	if !ok {
		return
	}
	dst, ok := plugins["io.containerd.cri.v1.runtime"].(map[string]any)
	if !ok {
		dst = map[string]any{}
	}
	for k, v := range src {
		switch k {
		case "containerd", "cni", "sandbox_image", "registry", "image_decryption", "max_concurrent_downloads",
			"image_pull_progress_timeout", "image_pull_with_sync_fs", "stats_collect_period", "disable_tcp_service",
			"stream_server_address", "stream_server_port", "stream_idle_timeout", "enable_tls_streaming", "x509_key_pair_streaming":
			continue
		}
		if _, ok := dst[k]; !ok {
			dst[k] = v
		}
	}
	if sc, ok := src["containerd"].(map[string]any); ok {
		dc, ok := dst["containerd"].(map[string]any)
		if !ok {
			dc = map[string]any{}
		}
		for k, v := range sc {
			switch k {
			case "snapshotter", "disable_snapshot_annotations", "discard_unpacked_layers":
				continue
			}
			if _, ok := dc[k]; !ok {
				dc[k] = v
			}
		}
		dst["containerd"] = dc
	}
	plugins["io.containerd.cri.v1.runtime"] = dst
}

// mergeDeep merges from into to key by key (maps into maps; anything else replaces), as
// mergo.WithOverride merges containerd 2's plugin sections.
func mergeDeep(to, from map[string]any) {
	for k, v := range from {
		fm, fok := v.(map[string]any)
		tm, tok := to[k].(map[string]any)
		if fok && tok {
			mergeDeep(tm, fm)
			continue
		}
		if fok {
			c := map[string]any{}
			mergeDeep(c, fm)
			v = c
		}
		to[k] = v
	}
}

// logLine is a containerd log line (logrus's text format), which a combined output mixes
// into the dump.
var (
	logLine = regexp.MustCompile(`^time="[^"]*" level=`)
	logMsg  = regexp.MustCompile(`msg="((?:[^"\\]|\\.)*)"`)
)
