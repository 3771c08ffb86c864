package nodereport

import (
	"errors"
	"reflect"
	"testing"
	"time"
)

func roundTrip(t *testing.T, r AgentRequest) AgentRequest {
	t.Helper()
	env := map[string]string{}
	for _, e := range r.Env() {
		env[e[0]] = e[1]
	}
	env[EnvNode] = r.Node // the Job sets it from the pod's spec
	got, err := ParseAgentRequest(r.Args(), func(k string) string { return env[k] }, nil)
	if err != nil {
		t.Fatalf("parse %v: %v", r.Args(), err)
	}
	return got
}

// norm is a request as the agent reads it back: defaults filled in.
func norm(r AgentRequest) AgentRequest {
	if r.HostRoot == "" {
		r.HostRoot = DefaultHostRoot
	}
	if r.LockTimeout <= 0 {
		r.LockTimeout = DefaultLockTimeout
	}
	if len(r.PackageKey) == 0 {
		r.PackageKey = nil
	}
	return r
}

func TestAgentRequestRoundTrip(t *testing.T) {
	every := AgentRequest{Mode: ModeApply, HostRoot: "/host/fake", Node: "gpu-1", RestartRuntime: true, DriverBranch: "580",
		ToolkitVersion: "1.17.8", PackageRepo: "https://mirror.inside/nvidia", PackageKey: []byte("-----BEGIN PGP\x00\xff"),
		LockTimeout: 3 * time.Minute, BootID: "6f1c"}
	// Every field set, so a field added without its flag fails here.
	v := reflect.ValueOf(every)
	for i := 0; i < v.NumField(); i++ {
		if v.Field(i).IsZero() {
			t.Fatalf("field %s is not set in the test request", v.Type().Field(i).Name)
		}
	}
	for _, r := range []AgentRequest{every, {Mode: ModeCheck}, {Mode: ModeReboot, BootID: "b"}} {
		if got := roundTrip(t, r); !reflect.DeepEqual(got, norm(r)) {
			t.Errorf("round trip\n%+v\ngave\n%+v", norm(r), got)
		}
	}
	if got := (AgentRequest{Mode: ModeCheck}).Args(); !reflect.DeepEqual(got, []string{"check"}) {
		t.Errorf("a check's argv: %v", got)
	}
}

func TestParseAgentRequestRefuses(t *testing.T) {
	env := func(k string) string {
		if k == EnvPackageKey {
			return "not base64!"
		}
		return ""
	}
	for _, tc := range []struct {
		args []string
		env  func(string) string
	}{
		{nil, func(string) string { return "" }},
		{[]string{"apply", "--no-such-flag"}, func(string) string { return "" }},
		{[]string{"apply", "--lock-timeout", "soon"}, func(string) string { return "" }},
		{[]string{"apply", "extra"}, func(string) string { return "" }},
		{[]string{"apply"}, env},
	} {
		if _, err := ParseAgentRequest(tc.args, tc.env, nil); !errors.Is(err, ErrAgentUsage) {
			t.Errorf("%v: %v, want a usage error", tc.args, err)
		}
	}
}

func FuzzAgentRequest(f *testing.F) {
	f.Add("apply", "/host", "n", true, "580", "latest", "https://m", []byte("k"), int64(time.Minute), "b")
	f.Fuzz(func(t *testing.T, mode, root, node string, restart bool, driver, toolkit, repo string, key []byte, lock int64, boot string) {
		r := AgentRequest{Mode: Mode(mode), HostRoot: root, Node: node, RestartRuntime: restart, DriverBranch: driver,
			ToolkitVersion: toolkit, PackageRepo: repo, PackageKey: key, LockTimeout: time.Duration(lock), BootID: boot}
		env := map[string]string{EnvNode: node}
		for _, e := range r.Env() {
			env[e[0]] = e[1]
		}
		got, err := ParseAgentRequest(r.Args(), func(k string) string { return env[k] }, nil)
		if err != nil {
			// Values a flag parser takes as flags themselves are not round-trippable; the
			// plugin never sends them (validated before). Only those may fail.
			return
		}
		want := norm(r)
		if want.HostRoot == "" {
			want.HostRoot = DefaultHostRoot
		}
		if node == "" {
			want.Node = ""
		}
		if !reflect.DeepEqual(got, want) {
			t.Fatalf("round trip\n%+v\ngave\n%+v", want, got)
		}
	})
}
