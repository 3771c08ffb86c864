package hostconfig

import (
	"context"
	"fmt"
	"os"
	"path"
	"regexp"
	"strings"
)

// What dnf says of a plan (RHEL): the packages a dry run would install.

var dnfRow = regexp.MustCompile(`(?m)^ (\S+)\s+(x86_64|aarch64|noarch)\s+(\S+)\s+(\S+)\s+\S+`)

// resolveDnf asks dnf (--assumeno answers its question no: nothing is installed).
func (p *packagePlan) resolveDnf(ctx context.Context, h *Host, run Runner) (map[string][]resolved, error) {
	out := map[string][]resolved{}
	tmp, done, err := planDir(h)
	if err != nil {
		return nil, err
	}
	defer done()
	for i, rp := range p.repos {
		kp := fmt.Sprintf("%s/%d.key", tmp, i)
		if err := os.WriteFile(h.Path(kp), p.keys[rp.list].Binary, 0o644); err != nil {
			return nil, fmt.Errorf("plan: %w", err)
		}
		if err := os.WriteFile(h.Path(path.Join(tmp, path.Base(rp.list))), []byte(rp.content(kp)), 0o644); err != nil {
			return nil, fmt.Errorf("plan: %w", err)
		}
	}
	opts := []string{"--setopt=reposdir=/etc/yum.repos.d," + tmp, "--assumeno"}
	for _, s := range p.steps {
		argv := append(append([]string{"dnf"}, opts...), "install")
		if s.module != "" {
			argv = append(append([]string{"dnf"}, opts...), "module", "install", s.module)
		}
		o, _ := run.Run(ctx, append(argv, s.packages...)...)
		if !strings.Contains(o, "Operation aborted") && !strings.Contains(o, "Nothing to do") {
			return nil, fmt.Errorf("%s: %s", s.what, managerProblem(o, nil))
		}
		for _, m := range dnfRow.FindAllStringSubmatch(o, -1) {
			out[s.check] = append(out[s.check], resolved{Name: m[1], Version: m[3]})
		}
	}
	return out, nil
}
