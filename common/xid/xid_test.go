package xid

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/kubectl-gpu/kubectl-gpu/common/remedy"
)

// The lines are in the formats NVIDIA's drivers print (kernel log, with dmesg's and
// journalctl's prefixes), from NVIDIA's XID documentation and its trackers.
const kernLog = `Dec  6 09:12:01 gpu-7 kernel: [  812.345678] NVRM: Xid (PCI:0000:3b:00): 13, pid=4410, name=python3, Graphics Exception: ESR 0x405840=0x4d000000 0x405844=0x0
[  901.000001] NVRM: Xid (PCI:0000:3b:00): 31, pid=4410, name=python3, Ch 00000008, intr 10000000. MMU Fault: ENGINE GRAPHICS GPCCLIENT_T1_0 faulted @ 0x7f4c_00000000. Fault is of type FAULT_PDE ACCESS_TYPE_VIRT_READ
[  902.1] NVRM: Xid (PCI:0000:3b:00): 43, pid=4410, name=python3, Ch 00000008
[  950.2] NVRM: Xid (PCI:0000:86:00): 48, pid='<unknown>', name=<unknown>, An uncorrectable double bit error (DBE) has been detected on GPU in the framebuffer at partition 6, subpartition 0.
[  950.3] NVRM: Xid (PCI:0000:86:00): 63, pid='<unknown>', name=<unknown>, Row Remapper: New row (0x00000000000a3f10) marked for remapping, reset gpu to activate.
[  950.4] NVRM: Xid (PCI:0000:86:00): 64, pid='<unknown>', name=<unknown>, Row Remapper Error: row (0x00000000000a3f11) remapping failed
[ 1001.5] NVRM: Xid (PCI:0000:b1:00): 74, pid='<unknown>', name=<unknown>, NVLink: fatal error detected on link 3(0x0, 0x0, 0x10000, 0x0, 0x0, 0x0, 0x0)
[ 1100.6] NVRM: Xid (PCI:0000:b1:00): 92, pid='<unknown>', name=<unknown>, High single-bit ECC error rate
Dec 06 09:30:00 gpu-7 kernel: NVRM: Xid (PCI:0000:b1:00): 94, pid=5120, name=train, Contained: SM (0x1). RST: No, D-RST: No
Dec 06 09:30:01 gpu-7 kernel: NVRM: Xid (PCI:0000:b1:00): 95, pid='<unknown>', name=<unknown>, Uncontained: FBHUB. RST: Yes, D-RST: No
[ 1300.7] NVRM: Xid (PCI:0000:c1:00): 119, pid=1234, name=nvidia-smi, Timeout after 6s of waiting for RPC response from GPU0 GSP! Expected function 76 (GSP_RM_CONTROL) (0x20800a4c 0x4).
[ 1400.8] NVRM: Xid (PCI:0000:c1:00): 79, pid='<unknown>', name=<unknown>, GPU has fallen off the bus.
[ 1500.9] NVRM: GPU at PCI:0000:da:00: GPU-2b7a1c3e-8f1d-4a8e-9b0c-1d2e3f4a5b6c
[ 1501.0] NVRM: GPU at PCI:0000:da:00: GPU has fallen off the bus.
[ 1502.0] nouveau 0000:01:00.0: unrelated line
`

func TestParse(t *testing.T) {
	got := Parse(kernLog)
	want := []struct {
		xid    int
		pci    string
		action remedy.Action
	}{
		{13, "0000:3b:00", remedy.Restart}, {31, "0000:3b:00", remedy.Restart}, {43, "0000:3b:00", remedy.Restart},
		{48, "0000:86:00", remedy.ResetGPU}, {63, "0000:86:00", remedy.None}, {64, "0000:86:00", remedy.Service},
		{74, "0000:b1:00", remedy.ResetGPU}, {92, "0000:b1:00", remedy.ResetGPU}, {94, "0000:b1:00", remedy.Restart}, {95, "0000:b1:00", remedy.ResetGPU},
		{119, "0000:c1:00", remedy.ResetGPU}, {79, "0000:c1:00", remedy.Service}, {0, "0000:da:00", remedy.Service},
	}
	if len(got) != len(want) {
		t.Fatalf("%d events, want %d: %+v", len(got), len(want), got)
	}
	for i, w := range want {
		if g := got[i]; g.XID != w.xid || g.PCI != w.pci || g.Action != w.action || g.Meaning == "" {
			t.Errorf("event %d: %+v, want XID %d on %s calling for %s", i, g, w.xid, w.pci, w.action)
		}
	}
	if got[3].Message != "An uncorrectable double bit error (DBE) has been detected on GPU in the framebuffer at partition 6, subpartition 0." {
		t.Errorf("message: %q", got[3].Message)
	}
	w, ok := Worst(got)
	if !ok || w.Action != remedy.Service || w.PCI != "0000:da:00" {
		t.Errorf("worst: %+v", w)
	}
	if _, ok := Worst(nil); ok {
		t.Error("no events, no worst")
	}
	// An XID the catalog lacks is a reset, said so.
	if e := Parse("NVRM: Xid (PCI:0000:01:00): 999, pid=1, something new"); len(e) != 1 || e[0].Action != remedy.ResetGPU {
		t.Errorf("unknown XID: %+v", e)
	}
	b, _ := json.Marshal(got[0])
	var back Event
	if err := json.Unmarshal(b, &back); err != nil || back != got[0] {
		t.Errorf("round trip: %s %+v %v", b, back, err)
	}
}

// TestFromDevicePlugin: the line k8s-device-plugin logs when an XID makes it mark a GPU
// unhealthy (internal/rm/health.go).
func TestFromDevicePlugin(t *testing.T) {
	log := `I1206 09:00:00.000000       1 health.go:150] Ignoring XID 13 on device GPU-1
I1206 09:14:02.123456       1 health.go:159] XidCriticalError: Xid=79 on Device=GPU-2b7a1c3e-8f1d-4a8e-9b0c-1d2e3f4a5b6c; marking device as unhealthy.
I1206 09:20:00.000000       1 health.go:159] XidCriticalError: Xid=48 on Device=GPU-9c9c; marking device as unhealthy.
`
	got := FromDevicePlugin(log)
	if len(got) != 2 || got[0].XID != 79 || got[0].PCI != "GPU-2b7a1c3e-8f1d-4a8e-9b0c-1d2e3f4a5b6c" || got[0].Action != remedy.Service || got[1].Action != remedy.ResetGPU {
		t.Fatalf("%+v", got)
	}
	if w, _ := Worst(got); w.XID != 79 {
		t.Errorf("worst: %+v", w)
	}
}

// TestParseFallenOffTheBus: the XID 79 line with a bare pid prefix, and the probe-time line
// with no XID (NVIDIA/NVSentinel #155), name the GPU by bus id and lose the prefix.
func TestParseFallenOffTheBus(t *testing.T) {
	ev := Parse("[ 7.1] NVRM: Xid (PCI:0000:3b:00): 79, pid=0, GPU has fallen off the bus.\n" +
		"[ 9.2] NVRM: The NVIDIA GPU 0000:3c:00.0 (PCI ID: 10de:20b2) installed in this system has fallen off the bus and is not responding to commands.\n")
	if len(ev) != 2 {
		t.Fatalf("%d events: %+v", len(ev), ev)
	}
	if ev[0].XID != 79 || ev[0].PCI != "0000:3b:00" || ev[0].Message != "GPU has fallen off the bus." || ev[0].Action != remedy.Service {
		t.Errorf("XID 79: %+v", ev[0])
	}
	if ev[1].XID != 0 || ev[1].PCI != "0000:3c:00.0" || !strings.HasPrefix(ev[1].Message, "has fallen off the bus") || ev[1].Action != remedy.Service {
		t.Errorf("probe-time line: %+v", ev[1])
	}
	if !SameGPU("0000:3b:00", "00000000:3B:00.0") || SameGPU("0000:3b:00", "0000:3c:00.0") {
		t.Error("SameGPU")
	}
}
