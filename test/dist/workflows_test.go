package dist

import (
	"bytes"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/rhysd/actionlint"

	"github.com/kubectl-gpu/kubectl-gpu/test/harness"
)

// TestWorkflows lints .github/workflows with actionlint (its shellcheck and pyflakes checks
// run when those tools are on PATH), and checks that every make target the workflows run
// exists and that the CI workflow runs the README's test command.
func TestWorkflows(t *testing.T) {
	root := harness.RepoRoot()
	files, err := filepath.Glob(filepath.Join(root, ".github", "workflows", "*.yml"))
	if err != nil || len(files) < 2 {
		t.Fatalf("workflows: %v %v", files, err)
	}
	var out bytes.Buffer
	l, err := actionlint.NewLinter(&out, &actionlint.LinterOptions{})
	if err != nil {
		t.Fatal(err)
	}
	errs, err := l.LintFiles(files, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(errs) > 0 {
		t.Fatalf("actionlint: %d problems\n%s", len(errs), out.String())
	}
	// The linter does find problems: an undefined context and a wrong key.
	bad := filepath.Join(t.TempDir(), "bad.yml")
	_ = os.WriteFile(bad, []byte("on: push\njobs:\n  x:\n    runs-on: ubuntu-24.04\n    step:\n      - run: echo ${{ secret.X }}\n"), 0o644)
	if errs, _ := l.LintFiles([]string{bad}, nil); len(errs) == 0 {
		t.Fatal("actionlint found nothing in a broken workflow")
	}
	mk, err := os.ReadFile(filepath.Join(root, "Makefile"))
	if err != nil {
		t.Fatal(err)
	}
	targets := map[string]bool{}
	for _, m := range regexp.MustCompile(`(?m)^([a-z-]+):`).FindAllStringSubmatch(string(mk), -1) {
		targets[m[1]] = true
	}
	for _, f := range files {
		b, _ := os.ReadFile(f)
		for _, m := range regexp.MustCompile(`make ([a-z-]+)`).FindAllStringSubmatch(string(b), -1) {
			if !targets[m[1]] {
				t.Errorf("%s runs 'make %s', which the Makefile lacks", filepath.Base(f), m[1])
			}
		}
	}
	ci, _ := os.ReadFile(filepath.Join(root, ".github", "workflows", "ci.yml"))
	readme, _ := os.ReadFile(filepath.Join(root, "README.md"))
	if !strings.Contains(string(ci), "make test") || !strings.Contains(string(readme), "make test") {
		t.Fatal("the CI workflow must run the README's test command (make test)")
	}
}
