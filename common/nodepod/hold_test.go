package nodepod

import "testing"

// TestWhyLine: the line of a failing plugin's log that says why, from the device plugin's
// and DCGM's real failure output.
func TestWhyLine(t *testing.T) {
	cases := map[string]string{
		// k8s-device-plugin v0.20 on a node without the driver in the container.
		`I1206 10:01:02.000000       1 main.go:235] Starting NVIDIA Device Plugin 0.20.0
I1206 10:01:02.000100       1 factory.go:112] Detected non-NVML platform: could not load NVML library: libnvidia-ml.so.1: cannot open shared object file: No such file or directory
E1206 10:01:02.000200       1 factory.go:120] Incompatible strategy detected auto
E1206 10:01:02.000300       1 main.go:175] error starting plugins: error creating plugin manager: unable to create plugin manager: invalid device discovery strategy`: "I1206 10:01:02.000100       1 factory.go:112] Detected non-NVML platform: could not load NVML library: libnvidia-ml.so.1: cannot open shared object file: No such file or directory",
		// "Failed to initialize NVML: Unknown Error" after a systemd daemon-reload.
		"Failed to initialize NVML: Unknown Error\n":                    "Failed to initialize NVML: Unknown Error",
		"starting\nlistening on :9400\nerror: failed to watch fields\n": "error: failed to watch fields",
		"all good\n": "",
	}
	for log, want := range cases {
		if got := WhyLine(log); got != want {
			t.Errorf("WhyLine(%q) = %q, want %q", log, got, want)
		}
	}
}
