package root

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"k8s.io/cli-runtime/pkg/genericiooptions"
	"sigs.k8s.io/yaml"
)

// TestDescriptionsFollowTheCommands: the root's help, the Krew manifest's description (what
// the krew index shows users) and the Helm plugin's name every command, and Krew's and the
// root's name what prep installs and reboots, so none of them drifts from the command tree
// and the README again.
func TestDescriptionsFollowTheCommands(t *testing.T) {
	root := NewCmdRoot(genericiooptions.NewTestIOStreamsDiscard())
	read := func(p string) string {
		b, err := os.ReadFile(filepath.Join("..", "..", p))
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	var krew struct {
		Spec struct {
			ShortDescription string `json:"shortDescription"`
			Description      string `json:"description"`
		} `json:"spec"`
	}
	// The manifest is a template: its {{ }} lines are not YAML until rendered.
	var plain []string
	for _, l := range strings.Split(read(".krew.yaml"), "\n") {
		if !strings.Contains(l, "{{") {
			plain = append(plain, l)
		}
	}
	if err := yaml.Unmarshal([]byte(strings.Join(plain, "\n")), &krew); err != nil {
		t.Fatal(err)
	}
	var helm struct {
		Description string `json:"description"`
	}
	if err := yaml.Unmarshal([]byte(read("plugins/helm/plugin.yaml")), &helm); err != nil {
		t.Fatal(err)
	}
	readme := read("README.md")
	texts := map[string]string{"kubectl gpu --help": root.Long, ".krew.yaml": krew.Spec.Description, "plugins/helm/plugin.yaml": helm.Description}
	n := 0
	for _, c := range root.Commands() {
		name := c.Name()
		if name == "completion" || name == "help" || c.Hidden {
			continue
		}
		n++
		for where, text := range texts {
			if !strings.Contains(text, name) {
				t.Errorf("%s does not name the %s command", where, name)
			}
		}
		if !strings.Contains(readme, "`kubectl gpu "+name) {
			t.Errorf("README does not name the %s command", name)
		}
	}
	if n < 6 {
		t.Fatalf("only %d commands found", n)
	}
	for _, what := range []string{"--install-driver", "--install-toolkit", "--reboot", "DRA", "MIG", "air gap"} {
		if !strings.Contains(krew.Spec.Description, what) {
			t.Errorf(".krew.yaml's description does not say %q", what)
		}
	}
	for _, what := range []string{"driver", "reboot", "DRA", "air gap"} {
		if !strings.Contains(root.Long, what) {
			t.Errorf("the root's help does not say %q", what)
		}
	}
}
