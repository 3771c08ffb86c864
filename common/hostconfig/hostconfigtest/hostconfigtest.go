// Package hostconfigtest builds fake host roots for tests: a copy of one of the roots under
// common/hostconfig/testdata/roots (assembled from real distributions' files) with NVIDIA
// GPUs added to its sysfs by go-nvlib's mock PCI device files. Test infrastructure only.
package hostconfigtest

import (
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"

	"github.com/NVIDIA/go-nvlib/pkg/nvpci"
)

// Names of the fake host roots.
var Names = []string{"ubuntu2204-kubeadm", "ubuntu2404-containerd2", "rke2", "k3s", "rhel9"}

// Dir is the directory holding the roots.
func Dir() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "testdata", "roots")
}

// Build copies root name to dst (symlinks kept) and adds gpus A100s on the PCI bus.
func Build(name, dst string, gpus int) error { return Overlay(name, dst, gpus) }

// Overlay is Build over what dst already holds (such as a Debian root), leaving out the
// paths of the root listed in skip (and what is below them).
func Overlay(name, dst string, gpus int, skip ...string) error {
	src := filepath.Join(Dir(), name)
	err := filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, p)
		for _, s := range skip {
			if rel == s {
				if d.IsDir() {
					return filepath.SkipDir
				}
				return nil
			}
		}
		target := filepath.Join(dst, rel)
		switch {
		case d.IsDir():
			return os.MkdirAll(target, 0o755)
		case d.Type()&fs.ModeSymlink != 0:
			link, err := os.Readlink(p)
			if err != nil {
				return err
			}
			_ = os.Remove(target)
			return os.Symlink(link, target)
		default:
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			info, _ := d.Info()
			return os.WriteFile(target, b, info.Mode().Perm())
		}
	})
	if err != nil {
		return fmt.Errorf("copy %s: %w", name, err)
	}
	for i := 0; i < gpus; i++ {
		dir := filepath.Join(dst, "sys", "bus", "pci", "devices", fmt.Sprintf("0000:%02x:00.0", 7+i))
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return err
		}
		if err := nvpci.CreateMockA100SysfsFiles(dir); err != nil {
			return err
		}
		// What nvpci's own mock adds beside the attribute files.
		if err := os.WriteFile(filepath.Join(dir, "numa_node"), []byte("0"), 0o644); err != nil {
			return err
		}
		if err := os.WriteFile(filepath.Join(dir, "20"), nil, 0o644); err != nil {
			return err
		}
		if err := os.Symlink(filepath.Join(dir, "20"), filepath.Join(dir, "iommu_group")); err != nil {
			return err
		}
	}
	return nil
}
