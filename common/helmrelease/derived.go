package helmrelease

// Values derived from a cluster, each with its reason: what a stack's values are made of.
import ()

// Derived is one value computed from the cluster, with why.
type Derived struct {
	Key    string `json:"key"`
	Value  any    `json:"value"`
	Reason string `json:"reason"`
	// Overridden is set when the user's own value wins.
	Overridden bool `json:"overridden,omitempty"`
}

// NodeLabel is a label the operator needs on a node for the derived values to hold
// (applied only with consent).
type NodeLabel struct {
	Node   string `json:"node"`
	Key    string `json:"key"`
	Value  string `json:"value"`
	Reason string `json:"reason"`
}

// Derivation is what the cluster says the chart's values should be.
type Derivation struct {
	Values     []Derived   `json:"values"`
	NodeLabels []NodeLabel `json:"nodeLabels,omitempty"`
	Warnings   []string    `json:"warnings,omitempty"`
}
