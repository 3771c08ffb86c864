package pkginstall

import "testing"

// TestDriverBranchOrVersion: the driver is asked for by branch or by exact version (its
// branch is the version's first part); anything else is refused.
func TestDriverBranchOrVersion(t *testing.T) {
	for _, tc := range []struct {
		in, branch, version string
		ok                  bool
	}{
		{"580", "580", "", true},
		{"570.195.03", "570", "570.195.03", true},
		{"570.195", "570", "570.195", true},
		{"latest", "", "", false},
		{"57", "", "", false},
		{"570.195.03-0ubuntu1", "", "", false},
	} {
		i := Install{DriverBranch: tc.in}
		err := Validate(i)
		if (err == nil) != tc.ok {
			t.Errorf("%q: %v", tc.in, err)
			continue
		}
		if tc.ok && (i.Branch() != tc.branch || i.DriverVersion() != tc.version) {
			t.Errorf("%q: branch %q version %q", tc.in, i.Branch(), i.DriverVersion())
		}
	}
}
