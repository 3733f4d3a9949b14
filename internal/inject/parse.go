package inject

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"

	utiljson "k8s.io/apimachinery/pkg/util/json"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/yaml"
)

// Source is one input: its name, for messages, and its bytes.
type Source struct {
	Name string
	Data []byte
}

// document is one YAML document or JSON value of a source.
type document struct {
	where string         // "deploy.yaml: document 2"
	obj   map[string]any // nil for an empty document
}

// parse splits src into documents: a JSON stream when it starts with { or [,
// else YAML documents separated by --- lines.
func parse(src Source) ([]document, error) {
	trimmed := bytes.TrimLeft(src.Data, " \t\r\n")
	if len(trimmed) > 0 && (trimmed[0] == '{' || trimmed[0] == '[') {
		return parseJSON(src)
	}
	r := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(src.Data)))
	var docs []document
	for i := 1; ; i++ {
		raw, err := r.Read()
		if errors.Is(err, io.EOF) {
			return docs, nil
		}
		where := fmt.Sprintf("%s: document %d", src.Name, i)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", where, err)
		}
		j, err := yaml.YAMLToJSONStrict(raw) // strict: a duplicate key is an error, not a guess
		if err != nil {
			return nil, fmt.Errorf("%s: %w", where, err)
		}
		obj, err := decodeObject(j)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", where, err)
		}
		docs = append(docs, document{where: where, obj: obj})
	}
}

func parseJSON(src Source) ([]document, error) {
	dec := json.NewDecoder(bytes.NewReader(src.Data))
	var docs []document
	for i := 1; ; i++ {
		var raw json.RawMessage
		err := dec.Decode(&raw)
		if errors.Is(err, io.EOF) {
			return docs, nil
		}
		where := fmt.Sprintf("%s: document %d", src.Name, i)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", where, err)
		}
		obj, err := decodeObject(raw)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", where, err)
		}
		docs = append(docs, document{where: where, obj: obj})
	}
}

// decodeObject decodes one JSON value: null is an empty document, anything
// but an object is an error. Integers become int64, as the unstructured
// converter expects.
func decodeObject(j []byte) (map[string]any, error) {
	var v any
	if err := utiljson.Unmarshal(j, &v); err != nil {
		return nil, err
	}
	switch v := v.(type) {
	case nil:
		return nil, nil
	case map[string]any:
		return v, nil
	default:
		return nil, fmt.Errorf("want a Kubernetes object, have %s", typeName(v))
	}
}

// encode writes the documents as YAML separated by --- lines.
func encode(docs []document) ([]byte, error) {
	var b bytes.Buffer
	for _, d := range docs {
		if d.obj == nil {
			continue
		}
		y, err := yaml.Marshal(d.obj)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", d.where, err)
		}
		if b.Len() > 0 {
			b.WriteString("---\n")
		}
		b.Write(y)
	}
	return b.Bytes(), nil
}
