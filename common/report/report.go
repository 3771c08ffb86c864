// Package report holds what the commands print: the versioned documents that `-o json|yaml`
// emit for runbooks, and the one writer that prints them as a table, JSON or YAML.
package report

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"strings"

	goyaml "go.yaml.in/yaml/v2"
	"k8s.io/cli-runtime/pkg/printers"

	"github.com/kubectl-gpu/kubectl-gpu/common/cliexit"
	"github.com/kubectl-gpu/kubectl-gpu/common/docmeta"
)

// APIVersion of every document kubectl-gpu prints (see package docmeta).
const APIVersion = docmeta.APIVersion

// TypeMeta is embedded first in every document.
type TypeMeta = docmeta.TypeMeta

// Meta returns the TypeMeta of a document of kind.
func Meta(kind string) TypeMeta { return docmeta.Meta(kind) }

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
		b, err := jsonToYAML(j)
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

// jsonToYAML prints a JSON document as YAML with the keys sorted, as sigs.k8s.io/yaml's
// JSONToYAML does, but decodes the JSON with encoding/json instead of reading it back with
// the YAML parser, which made -o yaml about 20 times slower than -o json on a prep report.
// Integers stay integers (json.Number), other numbers are float64, as the YAML reader made
// them; the emitter escapes what YAML cannot hold raw.
func jsonToYAML(j []byte) ([]byte, error) {
	dec := json.NewDecoder(bytes.NewReader(j))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return nil, err
	}
	return goyaml.Marshal(yamlNumbers(v))
}

// yamlNumbers replaces the json.Numbers in a decoded JSON value by int64 or float64.
func yamlNumbers(v any) any {
	switch t := v.(type) {
	case map[string]any:
		for k, e := range t {
			t[k] = yamlNumbers(e)
		}
	case []any:
		for i, e := range t {
			t[i] = yamlNumbers(e)
		}
	case json.Number:
		if i, err := t.Int64(); err == nil {
			return i
		}
		if f, err := t.Float64(); err == nil {
			return f
		}
		return string(t)
	}
	return v
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

// Count is "1 node", "3 nodes": n and the noun, plural unless n is 1.
func Count(n int, noun string) string {
	if n == 1 {
		return "1 " + noun
	}
	return fmt.Sprintf("%d %ss", n, noun)
}
