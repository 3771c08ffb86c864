package root

// HelmPluginArgs maps a `helm gpu …` call onto the command tree. Helm runs plugins with
// HELM_PLUGIN_NAME set and passes its global settings in the environment; the operator verbs
// are top-level there (`helm gpu install`), and Helm's namespace and context become the
// kubectl flags unless given on the command line. Outside Helm the arguments are unchanged.
func HelmPluginArgs(args []string, getenv func(string) string) []string {
	if getenv("HELM_PLUGIN_NAME") == "" {
		return args
	}
	out := []string{}
	if len(args) > 0 {
		switch args[0] {
		case "install", "upgrade", "status", "values", "uninstall", "sharing", "mig":
			out = append(out, "operator")
		}
	}
	out = append(out, args...)
	has := func(flags ...string) bool {
		for _, a := range args {
			for _, f := range flags {
				if a == f || len(a) > len(f) && a[:len(f)+1] == f+"=" {
					return true
				}
			}
		}
		return false
	}
	if ns := getenv("HELM_NAMESPACE"); ns != "" && !has("--namespace", "-n") {
		out = append(out, "--namespace", ns)
	}
	if ctx := getenv("HELM_KUBECONTEXT"); ctx != "" && !has("--context") {
		out = append(out, "--context", ctx)
	}
	return out
}
