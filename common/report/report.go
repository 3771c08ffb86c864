// Package report holds what the commands print: the versioned documents that `-o json|yaml`
// emit for runbooks, and the one writer that prints them as a table, JSON or YAML.
package report

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"unicode/utf8"

	"k8s.io/cli-runtime/pkg/printers"
	"sigs.k8s.io/yaml"

	"github.com/kubectl-gpu/kubectl-gpu/common/cliexit"
)

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

// Format is an output format (-o).
type Format string

// The output formats.
const (
	Table Format = "table"
	Wide  Format = "wide"
	JSON  Format = "json"
	YAML  Format = "yaml"
	JUnit Format = "junit"
)

// ParseFormat checks -o against the formats a command allows; "" means table.
func ParseFormat(s string, allowed ...Format) (Format, error) {
	if s == "" {
		return Table, nil
	}
	names := make([]string, 0, len(allowed))
	for _, a := range allowed {
		if Format(s) == a {
			return a, nil
		}
		names = append(names, string(a))
	}
	return "", cliexit.Usagef("unknown output format %q: use one of %s", s, strings.Join(names, ", "))
}

// Tabular is a document that can print itself as a table.
type Tabular interface {
	// Rows returns the header and the rows; wide adds columns.
	Rows(wide bool) (header []string, rows [][]string)
}

// Texter is a document whose table form is free text (such as `version`).
type Texter interface {
	WriteText(w io.Writer) error
}

// Print writes doc to w in format f: JSON and YAML print the document, table and wide the
// rows of a Tabular document.
func Print(w io.Writer, f Format, doc any) error {
	switch f {
	case JSON:
		b, err := json.MarshalIndent(doc, "", "  ")
		if err != nil {
			return fmt.Errorf("encode JSON: %w", err)
		}
		_, err = fmt.Fprintf(w, "%s\n", b)
		return err
	case YAML:
		j, err := json.Marshal(doc)
		if err != nil {
			return fmt.Errorf("encode YAML: %w", err)
		}
		b, err := yaml.JSONToYAML(yamlPrintable(j))
		if err != nil {
			return fmt.Errorf("encode YAML: %w", err)
		}
		_, err = w.Write(b)
		return err
	case Table, Wide, "":
		if t, ok := doc.(Texter); ok {
			return t.WriteText(w)
		}
		t, ok := doc.(Tabular)
		if !ok {
			return fmt.Errorf("%T has no table form", doc)
		}
		header, rows := t.Rows(f == Wide)
		return WriteTable(w, header, rows)
	}
	return cliexit.Usagef("output format %q is not supported here", f)
}

// yamlPrintable escapes, in JSON text, the characters JSON leaves raw but YAML refuses in
// a document or reads as a line break (DEL, the C1 controls with NEL, U+2028, U+2029,
// U+FFFE, U+FFFF): text read from hosts (an os-release, a driver banner) may hold them, and
// -o yaml must still print it. They can only be inside strings, where the \u escape means
// the same character.
func yamlPrintable(j []byte) []byte {
	var out []byte
	for i := 0; i < len(j); {
		r, n := utf8.DecodeRune(j[i:])
		if r == 0x7f || (r >= 0x80 && r <= 0x9f) || r == 0x2028 || r == 0x2029 || r == 0xfffe || r == 0xffff {
			if out == nil {
				out = append(make([]byte, 0, len(j)+16), j[:i]...)
			}
			out = fmt.Appendf(out, `\u%04x`, r)
		} else if out != nil {
			out = append(out, j[i:i+n]...)
		}
		i += n
	}
	if out == nil {
		return j
	}
	return out
}

// WriteTable prints aligned columns the way kubectl does.
func WriteTable(w io.Writer, header []string, rows [][]string) error {
	tw := printers.GetNewTabWriter(w)
	fmt.Fprintln(tw, strings.Join(header, "\t"))
	for _, r := range rows {
		fmt.Fprintln(tw, strings.Join(r, "\t"))
	}
	return tw.Flush()
}
