package inventory

import "testing"

func TestDriverForm(t *testing.T) {
	for in, want := range map[string]string{
		"580.82.7": "580.82.07", "580.95.5": "580.95.05", "550.127.8": "550.127.08",
		"570.86.15": "570.86.15", "580.82.07": "580.82.07", "390.157": "390.157", "": "", "x.y.z": "x.y.z",
	} {
		if got := DriverForm(in); got != want {
			t.Errorf("DriverForm(%q) = %q, want %q", in, got, want)
		}
	}
	if got := majorMinor("13.0.0"); got != "13.0" {
		t.Errorf("majorMinor: %q", got)
	}
}
