package hostconfig

import (
	"fmt"
	"io"
	"os"
	"regexp"
	"sort"
	"strings"

	"golang.org/x/sys/unix"

	rep "github.com/kubectl-gpu/kubectl-gpu/common/nodereport"
	"github.com/kubectl-gpu/kubectl-gpu/common/remedy"
	"github.com/kubectl-gpu/kubectl-gpu/common/xid"
)

// The kernel log, where the agent can read it: the kernel's own ring buffer (/dev/kmsg: this
// boot's messages; readable by a privileged agent), else the files syslog keeps it in
// (Debian/Ubuntu kern.log, RHEL messages; this boot's part: after the last boot banner).
var kernelLogFiles = []string{"/var/log/kern.log", "/var/log/messages"}

// kernelLogTail is how much of a log file is read: XIDs are rare, the files can be large.
const kernelLogTail = 8 << 20

// readKernelLog returns this boot's kernel log and where it came from ("" none readable).
func (h *Host) readKernelLog() (text, source string) {
	if s, ok := h.readKmsg(); ok {
		return s, "/dev/kmsg"
	}
	for _, f := range kernelLogFiles {
		s, ok := h.readTail(f, kernelLogTail)
		if !ok {
			continue
		}
		return sinceBoot(s), f
	}
	return "", ""
}

// readKmsg reads the kernel's ring buffer without waiting for new records (each read returns
// one record; EAGAIN at the end). Records are "prio,seq,usec,flags;message".
func (h *Host) readKmsg() (string, bool) {
	p := h.Path("/dev/kmsg")
	fi, err := os.Stat(p)
	if err != nil || fi.Mode()&os.ModeCharDevice == 0 {
		return "", false
	}
	// The raw descriptor, not an *os.File: Go's poller would wait at the end of the buffer for
	// new records instead of returning EAGAIN.
	fd, err := unix.Open(p, unix.O_RDONLY|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err != nil {
		return "", false
	}
	defer unix.Close(fd)
	var b strings.Builder
	buf := make([]byte, 8192)
	for b.Len() < kernelLogTail {
		n, err := unix.Read(fd, buf)
		switch {
		case err == unix.EPIPE || err == unix.EINTR:
			continue // records overwritten while reading: go on with the next
		case err != nil || n <= 0:
			return b.String(), true
		}
		rec := string(buf[:n])
		if _, msg, ok := strings.Cut(rec, ";"); ok {
			rec = msg
		}
		// Continuation lines of a record (" KEY=value") are the record's dictionary.
		rec, _, _ = strings.Cut(rec, "\n")
		b.WriteString(rec + "\n")
	}
	return b.String(), true
}

// readTail reads at most the last n bytes of a host file, from a line start.
func (h *Host) readTail(p string, n int64) (string, bool) {
	f, err := os.Open(h.Path(p))
	if err != nil {
		return "", false
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil || !fi.Mode().IsRegular() {
		return "", false
	}
	off := int64(0)
	if fi.Size() > n {
		off = fi.Size() - n
	}
	b, err := io.ReadAll(io.NewSectionReader(f, off, fi.Size()-off))
	if err != nil {
		return "", false
	}
	s := string(b)
	if off > 0 {
		if i := strings.IndexByte(s, '\n'); i >= 0 {
			s = s[i+1:]
		}
	}
	return s, true
}

// bootBanner is the first line the kernel prints at boot, in syslog's and dmesg's forms.
var bootBanner = regexp.MustCompile(`kernel: (?:\[ *[0-9.]+\] )?Linux version `)

// sinceBoot keeps what follows the last boot banner, or all of it when the banner is not
// there.
func sinceBoot(s string) string {
	m := bootBanner.FindAllStringIndex(s, -1)
	if len(m) == 0 {
		return s
	}
	i := m[len(m)-1][0]
	if j := strings.LastIndexByte(s[:i], '\n'); j >= 0 {
		return s[j+1:]
	}
	return s
}

// checkXID reads the XIDs the driver logged since boot and classes each by NVIDIA's XID
// catalog: a GPU that fell off the bus or a failed remapping is serviced (fail); an event that
// calls for a GPU reset or a reboot is a warning (the kernel log keeps it after the reset that
// cleared it: NVML's health says what is still wrong); application faults are listed.
func checkXID(h *Host, r *rep.Report) {
	if len(r.GPUs) == 0 {
		r.Add(rep.CheckXID, rep.Skipped, "no NVIDIA GPU", "")
		return
	}
	text, source := h.readKernelLog()
	if source == "" {
		r.Add(rep.CheckXID, rep.Skipped, "kernel log not readable (no /dev/kmsg for this pod, no "+strings.Join(kernelLogFiles, " or ")+"): XIDs not checked", "")
		return
	}
	events := xid.Parse(text)
	r.XIDs = events
	if len(events) == 0 {
		r.Add(rep.CheckXID, rep.OK, "no XID since boot ("+source+")", "")
		return
	}
	worst, _ := xid.Worst(events)
	msg := fmt.Sprintf("%s since boot (%s); worst: %s on %s: %s", xidCounts(events), source, xidName(worst), worst.PCI, worst.Meaning)
	switch worst.Action {
	case remedy.Service:
		r.Add(rep.CheckXID, rep.Fail, msg, worst.Action.Fix(worst.PCI, ""))
	case remedy.Reboot, remedy.ResetGPU:
		r.Add(rep.CheckXID, rep.Warn, msg, worst.Action.Fix(worst.PCI, ""))
	default:
		r.Add(rep.CheckXID, rep.OK, msg, "")
	}
}

func xidName(e xid.Event) string {
	if e.XID == 0 {
		return "fallen off the bus"
	}
	return fmt.Sprintf("XID %d", e.XID)
}

// xidCounts is "3 XIDs (13 ×2, 79)".
func xidCounts(events []xid.Event) string {
	count := map[string]int{}
	var order []string
	for _, e := range events {
		k := fmt.Sprint(e.XID)
		if e.XID == 0 {
			k = "off the bus"
		}
		if count[k] == 0 {
			order = append(order, k)
		}
		count[k]++
	}
	sort.SliceStable(order, func(i, j int) bool {
		return len(order[i]) < len(order[j]) || len(order[i]) == len(order[j]) && order[i] < order[j]
	})
	parts := make([]string, len(order))
	for i, k := range order {
		parts[i] = k
		if count[k] > 1 {
			parts[i] += fmt.Sprintf(" ×%d", count[k])
		}
	}
	noun := "XIDs"
	if len(events) == 1 {
		noun = "1 XID"
		return noun + " (" + strings.Join(parts, ", ") + ")"
	}
	return fmt.Sprintf("%d %s (%s)", len(events), noun, strings.Join(parts, ", "))
}
