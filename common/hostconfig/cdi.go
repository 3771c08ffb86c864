package hostconfig

import (
	"fmt"
	"path"
	"strings"

	"tags.cncf.io/container-device-interface/pkg/cdi"

	"github.com/kubectl-gpu/kubectl-gpu/common/cliexit"
	rep "github.com/kubectl-gpu/kubectl-gpu/common/nodereport"
)

// cdiGPUs reads the CDI specs of kind nvidia.com/gpu with the CDI project's own reader (which
// validates them as containerd's CDI cache does): for each spec, the GPUs it names by index
// ("0", "1", …; MIG devices "0:1" and "all" not counted) and by UUID; and the specs that
// do not parse.
func (h *Host) cdiGPUs() (specs []cdiSpec, broken []string) {
	for prio, dir := range rep.CDISpecDirs {
		var files []string
		for _, ext := range []string{"*.yaml", "*.json"} {
			files = append(files, h.Glob(path.Join(dir, ext))...)
		}
		for _, f := range files {
			s, err := cdi.ReadSpec(h.Path(f), prio)
			if err != nil {
				// The reader's message names the file by its path under the host root.
				msg := strings.ReplaceAll(cliexit.OneLine(err.Error()), h.Path(f), f)
				msg = strings.TrimPrefix(msg, "failed to parse CDI Spec ")
				if !strings.Contains(msg, f) {
					msg = f + ": " + msg
				}
				broken = append(broken, msg)
				continue
			}
			if s.Kind != "nvidia.com/gpu" {
				continue
			}
			c := cdiSpec{path: f}
			for _, d := range s.Devices {
				switch {
				case isIndex(d.Name):
					c.index++
				case strings.HasPrefix(d.Name, "GPU-"):
					c.uuid++
				}
			}
			specs = append(specs, c)
		}
	}
	return specs, broken
}

type cdiSpec struct {
	path        string
	index, uuid int
}

func (c cdiSpec) gpus() int { return max(c.index, c.uuid) }

func isIndex(s string) bool {
	if s == "" {
		return false
	}
	for _, r := range s {
		if r < '0' || r > '9' {
			return false
		}
	}
	return true
}

// checkCDI: with CDI on, containers get their GPUs through the CDI spec; a spec missing, not
// parsing, or naming fewer GPUs than the host has (made before a GPU was added or replaced)
// fails those GPUs' allocations.
func checkCDI(h *Host, r *rep.Report) {
	if len(r.GPUs) == 0 {
		r.Add(rep.CheckCDI, rep.Skipped, "no NVIDIA GPU", "")
		return
	}
	specs, broken := h.cdiGPUs()
	fix := rep.CDIGenerate + " (the NVIDIA Container Toolkit's nvidia-cdi-refresh service does it at boot)"
	if len(broken) > 0 {
		r.Add(rep.CheckCDI, rep.Fail, "CDI spec does not parse, containerd skips it: "+broken[0], "fix or remove the file; "+fix)
		return
	}
	best := cdiSpec{}
	for _, s := range specs {
		if s.gpus() >= best.gpus() {
			best = s
		}
	}
	switch {
	case len(specs) == 0 && r.CDI && r.DriverVersion != "":
		// Needed only where GPUs are handed out through CDI (the DRA driver, a device plugin
		// in a CDI mode): the cluster side tells (kubectl gpu doctor).
		r.Add(rep.CheckCDI, rep.Skipped, rep.NoCDISpec+" in "+strings.Join(rep.CDISpecDirs, " or ")+" (containerd injects CDI devices: a DRA driver or a device plugin in a CDI mode needs one)", fix)
	case len(specs) == 0:
		r.Add(rep.CheckCDI, rep.Skipped, rep.NoCDISpec+" (CDI not in use)", "")
	case best.gpus() < len(r.GPUs):
		r.Add(rep.CheckCDI, rep.Fail, fmt.Sprintf("the CDI spec %s names %d of the %d GPUs on the PCI bus (made before a GPU was added or replaced?): the others cannot be allocated through CDI", best.path, best.gpus(), len(r.GPUs)), fix)
	default:
		r.Add(rep.CheckCDI, rep.OK, fmt.Sprintf("CDI spec %s names all %d GPUs", best.path, len(r.GPUs)), "")
	}
}
