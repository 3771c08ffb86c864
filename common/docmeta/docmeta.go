// Package docmeta is the type header of every document kubectl-gpu prints or reads
// (apiVersion, kind). It imports nothing, so the node agent can speak the schema without
// linking the plugin's printers.
package docmeta

// APIVersion of every document kubectl-gpu prints. A breaking change to any document
// bumps it.
const APIVersion = "gpu.kubectl-gpu.io/v1alpha1"

// TypeMeta is embedded first in every document.
type TypeMeta struct {
	APIVersion string `json:"apiVersion"`
	Kind       string `json:"kind"`
}

// Meta returns the TypeMeta of a document of kind.
func Meta(kind string) TypeMeta { return TypeMeta{APIVersion: APIVersion, Kind: kind} }
