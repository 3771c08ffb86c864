package hostconfig

import (
	"context"
	"os"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	rep "github.com/kubectl-gpu/kubectl-gpu/common/nodereport"
)

// TestDevChar: NVIDIA device nodes (real character devices, made with mknod in the fake
// root) without /dev/char links fail the check; apply writes the toolkit's udev rule and
// runs nvidia-ctk to make the links; without nvidia-ctk the command is not run and says why.
func TestDevChar(t *testing.T) {
	if os.Getuid() != 0 {
		t.Skip("mknod needs root")
	}
	root := fakeRoot(t, "ubuntu2204-kubeadm", 1)
	h := &Host{Root: root}
	if err := os.MkdirAll(h.Path("/dev/char"), 0o755); err != nil {
		t.Fatal(err)
	}
	for name, minor := range map[string]uint32{"nvidia0": 0, "nvidiactl": 255} {
		if err := unix.Mknod(h.Path("/dev/"+name), unix.S_IFCHR|0o666, int(unix.Mkdev(195, minor))); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Symlink("../nvidia0", h.Path("/dev/char/195:0")); err != nil {
		t.Fatal(err)
	}
	r := rep.New("test", ModeCheck)
	Check(context.Background(), h, r, nil)
	c, _ := r.Get(rep.CheckDevChar)
	if c.Status != rep.Fail || !strings.Contains(c.Message, "nvidiactl") || strings.Contains(c.Message, "nvidia0,") {
		t.Fatalf("check: %+v, want a failure naming nvidiactl only", c)
	}
	rec := &Recorder{}
	changes, err := Apply(context.Background(), h, r, rec, ApplyOptions{Now: time.Unix(0, 0)}, false)
	if err != nil {
		t.Fatal(err)
	}
	var cmd rep.Change
	for _, ch := range changes {
		if ch.Check == rep.CheckDevChar && len(ch.Command) > 0 {
			cmd = ch
		}
	}
	if !strings.Contains(cmd.Note, "nvidia-ctk is not installed") || cmd.Done {
		t.Errorf("without nvidia-ctk: %+v", cmd)
	}
	if s, _ := h.Read(DevCharRule); !strings.Contains(s, "create-dev-char-symlinks --create-all") {
		t.Errorf("udev rule not written: %q", s)
	}
	_ = os.MkdirAll(h.Path("/usr/bin"), 0o755)
	if err := os.WriteFile(h.Path("/usr/bin/nvidia-ctk"), []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	if _, err := Apply(context.Background(), h, r, rec, ApplyOptions{Now: time.Unix(0, 0)}, false); err != nil {
		t.Fatal(err)
	}
	ran := false
	for _, argv := range rec.Commands {
		ran = ran || strings.Join(argv, " ") == strings.Join(DevCharCommand, " ")
	}
	if !ran {
		t.Errorf("nvidia-ctk not run: %v", rec.Commands)
	}
	// With the links there, the check passes.
	if err := os.Symlink("../nvidiactl", h.Path("/dev/char/195:255")); err != nil {
		t.Fatal(err)
	}
	r = rep.New("test", ModeCheck)
	Check(context.Background(), h, r, nil)
	if c, _ := r.Get(rep.CheckDevChar); c.Status != rep.OK {
		t.Errorf("with every link: %+v", c)
	}
}
