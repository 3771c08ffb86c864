package hostconfig

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"
)

// Steps of a file write, in order; fault (set by tests only) is called at each and an error
// it returns is what that step returns: a crash, a full disk or a read-only file system
// injected exactly there.
const (
	StepBackup    = "backup"     // writing the backup of the old file
	StepTemp      = "temp"       // creating the temporary file
	StepTempWrite = "temp-write" // writing the new content into it
	StepTempSync  = "temp-sync"  // syncing it
	StepStaged    = "staged"     // temporary file complete, before the rename
	StepRename    = "rename"     // the rename over the file
	StepCommitted = "committed"  // after the rename, before the directory sync
)

// Steps lists them in order.
var Steps = []string{StepBackup, StepTemp, StepTempWrite, StepTempSync, StepStaged, StepRename, StepCommitted}

var fault func(step, path string) error

func at(step, path string) error {
	if fault == nil {
		return nil
	}
	return fault(step, path)
}

// Staged is a file write made ready (old file backed up, new content in a synced temporary
// file beside it) but not yet in place: Commit puts it there, Abort takes it back.
type Staged struct {
	Path, Backup string
	tmp          string
	madeBackup   bool
	committed    bool
}

// Stage backs up path (path.kubectl-gpu-YYYYMMDDTHHMMSS.bak) and writes content to a synced
// temporary file in the same directory. On error nothing of it is left.
func Stage(path string, content []byte, now time.Time) (_ *Staged, err error) {
	s := &Staged{Path: path}
	defer func() {
		if err != nil {
			s.Abort()
		}
	}()
	dir := filepath.Dir(path)
	mode := os.FileMode(0o644)
	old, err := os.ReadFile(path)
	switch {
	case err == nil:
		if fi, err := os.Stat(path); err == nil {
			mode = fi.Mode().Perm()
		}
		s.Backup = BackupPath(path, now)
		if _, err := os.Stat(s.Backup); errors.Is(err, os.ErrNotExist) {
			s.madeBackup = true
		}
		if err := at(StepBackup, path); err != nil {
			return nil, fmt.Errorf("back up %s: %w", path, err)
		}
		if err := writeSynced(s.Backup, old, mode); err != nil {
			return nil, fmt.Errorf("back up %s: %w", path, err)
		}
	case os.IsNotExist(err):
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return nil, fmt.Errorf("create %s: %w", dir, err)
		}
	default:
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	if err := at(StepTemp, path); err != nil {
		return nil, fmt.Errorf("write %s: %w", path, err)
	}
	tmp, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp-")
	if err != nil {
		return nil, fmt.Errorf("write %s: %w", path, err)
	}
	s.tmp = tmp.Name()
	if err := at(StepTempWrite, path); err != nil {
		tmp.Close()
		return nil, fmt.Errorf("write %s: %w", path, err)
	}
	if _, err := tmp.Write(content); err != nil {
		tmp.Close()
		return nil, fmt.Errorf("write %s: %w", path, err)
	}
	if err := tmp.Chmod(mode); err != nil {
		tmp.Close()
		return nil, fmt.Errorf("write %s: %w", path, err)
	}
	if err := at(StepTempSync, path); err != nil {
		tmp.Close()
		return nil, fmt.Errorf("write %s: %w", path, err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return nil, fmt.Errorf("write %s: %w", path, err)
	}
	if err := tmp.Close(); err != nil {
		return nil, fmt.Errorf("write %s: %w", path, err)
	}
	if err := at(StepStaged, path); err != nil {
		return nil, err
	}
	return s, nil
}

// Commit renames the temporary file over the file and syncs the directory. A reader sees
// the old file or the new one, never a part.
func (s *Staged) Commit() error {
	if err := at(StepRename, s.Path); err != nil {
		return fmt.Errorf("replace %s: %w", s.Path, err)
	}
	if err := os.Rename(s.tmp, s.Path); err != nil {
		return fmt.Errorf("replace %s: %w", s.Path, err)
	}
	s.tmp, s.committed = "", true
	if err := at(StepCommitted, s.Path); err != nil {
		return err
	}
	if d, err := os.Open(filepath.Dir(s.Path)); err == nil {
		_ = d.Sync()
		d.Close()
	}
	return nil
}

// Abort removes the temporary file, and the backup Stage made unless the new file is
// already in place (then the backup is the only copy of the old one).
func (s *Staged) Abort() {
	if s.tmp != "" {
		os.Remove(s.tmp)
		s.tmp = ""
	}
	if s.madeBackup && !s.committed {
		os.Remove(s.Backup)
		s.madeBackup = false
	}
}

// WriteAtomic replaces path with content (Stage, then Commit). It returns the backup's path
// ("" for a new file).
func WriteAtomic(path string, content []byte, now time.Time) (backup string, err error) {
	s, err := Stage(path, content, now)
	if err != nil {
		return "", err
	}
	if err := s.Commit(); err != nil {
		s.Abort()
		return s.Backup, err
	}
	return s.Backup, nil
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

// BackupPath is where Stage keeps the old content of path when it writes it at now.
func BackupPath(path string, now time.Time) string {
	return fmt.Sprintf("%s.kubectl-gpu-%s.bak", path, now.UTC().Format("20060102T150405"))
}
