package hostconfig

import (
	"strings"
	"testing"
)

const v2Config = `version = 2
[plugins."io.containerd.grpc.v1.cri".containerd]
  default_runtime_name = "runc"
  [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
    runtime_type = "io.containerd.runc.v2"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
      SystemdCgroup = false
`

func TestContainerdEditV2(t *testing.T) {
	c, err := ParseContainerd(v2Config)
	if err != nil {
		t.Fatal(err)
	}
	if v, ok := c.SystemdCgroup(); !ok || v || c.Version != 2 {
		t.Fatalf("SystemdCgroup %v %v version %d", v, ok, c.Version)
	}
	if !c.SetSystemdCgroup(true) || c.SetSystemdCgroup(true) {
		t.Fatal("SetSystemdCgroup must change once")
	}
	if !c.AddNvidiaRuntime(NvidiaRuntimeBinary) || c.AddNvidiaRuntime(NvidiaRuntimeBinary) {
		t.Fatal("AddNvidiaRuntime must change once")
	}
	out := c.String()
	again, err := ParseContainerd(out)
	if err != nil {
		t.Fatalf("edited config does not parse: %v\n%s", err, out)
	}
	if b, ok := again.RuntimeBinary("nvidia"); !ok || b != NvidiaRuntimeBinary {
		t.Fatalf("nvidia runtime: %q %v\n%s", b, ok, out)
	}
	if v, _ := again.SystemdCgroup(); !v || again.DefaultRuntime() != "runc" {
		t.Fatalf("after edit:\n%s", out)
	}
	if !strings.Contains(out, "SystemdCgroup = true") {
		t.Fatal(out)
	}
}
