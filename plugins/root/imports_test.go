package root

import (
	"go/parser"
	"go/token"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// TestNoCommandImportsAnother: a command package (plugins/<command>) imports no other
// command; what two commands share lives in a neutral package (plugins/helmflags, plugins/pkgflags, plugins/rollflags, plugins/completion, plugins/verb) or in
// common/. Only the root and the main assemble the commands.
func TestNoCommandImportsAnother(t *testing.T) {
	const prefix = "github.com/kubectl-gpu/kubectl-gpu/plugins/"
	shared := map[string]bool{"helmflags": true, "pkgflags": true, "rollflags": true, "completion": true, "verb": true}
	dirs, err := os.ReadDir("..")
	if err != nil {
		t.Fatal(err)
	}
	checked := 0
	for _, d := range dirs {
		name := d.Name()
		if !d.IsDir() || name == "root" || name == "kubectl-gpu" || shared[name] {
			continue
		}
		for f, imports := range importsOf(t, filepath.Join("..", name)) {
			checked++
			for _, p := range imports {
				if other, ok := strings.CutPrefix(p, prefix); ok && !shared[strings.Split(other, "/")[0]] {
					t.Errorf("%s imports the command package %s", f, p)
				}
			}
		}
	}
	if checked == 0 {
		t.Fatal("no command package found")
	}
}

// TestHelmStacksArePeers: the operator's and the device plugin's libraries are peers (the
// same steps under the same names, each on common/helmrelease and common/gpusoftware):
// neither imports the other.
func TestHelmStacksArePeers(t *testing.T) {
	const prefix = "github.com/kubectl-gpu/kubectl-gpu/common/"
	for pkg, peer := range map[string]string{"deviceplugin": "operator", "operator": "deviceplugin"} {
		files := importsOf(t, filepath.Join("..", "..", "common", pkg))
		if len(files) == 0 {
			t.Fatalf("no files in common/%s", pkg)
		}
		for f, imports := range files {
			for _, p := range imports {
				if p == prefix+peer {
					t.Errorf("%s imports its peer %s", f, p)
				}
			}
		}
	}
}

// importsOf is what each non-test Go file of dir imports.
func importsOf(t *testing.T, dir string) map[string][]string {
	t.Helper()
	files, _ := filepath.Glob(filepath.Join(dir, "*.go"))
	out := map[string][]string{}
	for _, f := range files {
		if strings.HasSuffix(f, "_test.go") {
			continue
		}
		ast, err := parser.ParseFile(token.NewFileSet(), f, nil, parser.ImportsOnly)
		if err != nil {
			t.Fatal(err)
		}
		for _, imp := range ast.Imports {
			p, _ := strconv.Unquote(imp.Path.Value)
			out[f] = append(out[f], p)
		}
		if out[f] == nil {
			out[f] = []string{}
		}
	}
	return out
}
