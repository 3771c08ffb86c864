// Package procmem runs a command and measures its peak resident memory.
package procmem

import (
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"time"
)

// Run starts cmd, waits for it and returns its peak resident set in KiB: VmHWM from /proc,
// read every 10 ms while it runs. Not the rusage of wait4: a child that Go starts with
// vfork and exec inherits its parent's high-water mark there, which is the test binary's.
func Run(cmd *exec.Cmd) (peakKiB int64, err error) {
	if err := cmd.Start(); err != nil {
		return 0, err
	}
	done, sampled := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(sampled)
		for {
			if kib := vmHWM(cmd.Process.Pid); kib > peakKiB {
				peakKiB = kib
			}
			select {
			case <-done:
				return
			case <-time.After(10 * time.Millisecond):
			}
		}
	}()
	err = cmd.Wait()
	close(done)
	<-sampled
	return peakKiB, err
}

// vmHWM reads a process's peak resident set (KiB) from /proc; 0 once it is gone.
func vmHWM(pid int) int64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for _, l := range strings.Split(string(b), "\n") {
		if f := strings.Fields(l); len(f) >= 2 && f[0] == "VmHWM:" {
			n, _ := strconv.ParseInt(f[1], 10, 64)
			return n
		}
	}
	return 0
}
