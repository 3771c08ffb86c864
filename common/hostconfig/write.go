package hostconfig

import (
	"fmt"
	"os"
	"path/filepath"
	"time"
)

// crashAfterTempWrite, when set by tests, is called after the temporary file is written
// and synced but before the rename: returning an error simulates a crash at that point.
var crashAfterTempWrite func(path string) error

// WriteAtomic replaces path with content: a backup of the old file beside it
// (path.kubectl-gpu-YYYYMMDDTHHMMSS.bak), a temporary file in the same directory written
// and synced, then renamed over path and the directory synced. A reader sees the old file
// or the new one, never a part. It returns the backup's path ("" for a new file).
func WriteAtomic(path string, content []byte, now time.Time) (backup string, err error) {
	dir := filepath.Dir(path)
	mode := os.FileMode(0o644)
	old, err := os.ReadFile(path)
	switch {
	case err == nil:
		if fi, err := os.Stat(path); err == nil {
			mode = fi.Mode().Perm()
		}
		backup = fmt.Sprintf("%s.kubectl-gpu-%s.bak", path, now.UTC().Format("20060102T150405"))
		if err := writeSynced(backup, old, mode); err != nil {
			return "", fmt.Errorf("back up %s: %w", path, err)
		}
	case os.IsNotExist(err):
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return "", fmt.Errorf("create %s: %w", dir, err)
		}
	default:
		return "", fmt.Errorf("read %s: %w", path, err)
	}
	tmp, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp-")
	if err != nil {
		return backup, fmt.Errorf("write %s: %w", path, err)
	}
	defer os.Remove(tmp.Name()) // a no-op after the rename
	if _, err := tmp.Write(content); err != nil {
		tmp.Close()
		return backup, fmt.Errorf("write %s: %w", path, err)
	}
	if err := tmp.Chmod(mode); err != nil {
		tmp.Close()
		return backup, fmt.Errorf("write %s: %w", path, err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return backup, fmt.Errorf("write %s: %w", path, err)
	}
	if err := tmp.Close(); err != nil {
		return backup, fmt.Errorf("write %s: %w", path, err)
	}
	if crashAfterTempWrite != nil {
		if err := crashAfterTempWrite(path); err != nil {
			return backup, err
		}
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return backup, fmt.Errorf("replace %s: %w", path, err)
	}
	if d, err := os.Open(dir); err == nil {
		_ = d.Sync()
		d.Close()
	}
	return backup, nil
}

func writeSynced(path string, content []byte, mode os.FileMode) error {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, mode)
	if err != nil {
		return err
	}
	if _, err := f.Write(content); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
