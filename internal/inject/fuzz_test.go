package inject

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"
)

// FuzzTransform: the parser never panics, and what transforms once
// transforms again to the same bytes, in both directions.
func FuzzTransform(f *testing.F) {
	ins, _ := filepath.Glob("testdata/*.in.*")
	for _, in := range ins {
		b, err := os.ReadFile(in)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b, false)
	}
	f.Add([]byte(deployment), true)
	f.Add([]byte("apiVersion: v1\nkind: List\nitems: [{apiVersion: v1, kind: List, items: []}]\n"), false)
	f.Add([]byte(`{"apiVersion":"v1","kind":"Pod","spec":{"containers":[{"name":"a","ports":[{"containerPort":1e3}]}]}}`), true)
	f.Fuzz(func(t *testing.T, data []byte, classic bool) {
		o := Options{}
		if classic {
			o.Mode = ModeClassic
		}
		res, err := Transform([]Source{{Name: "fuzz", Data: data}}, o)
		if err != nil {
			return
		}
		again, err := Transform([]Source{{Name: "fuzz", Data: res.Manifests}}, o)
		if err != nil {
			t.Fatalf("output does not transform again: %v\n%s", err, res.Manifests)
		}
		if !bytes.Equal(again.Manifests, res.Manifests) {
			t.Fatalf("not idempotent:\n%s\n---- again:\n%s", res.Manifests, again.Manifests)
		}
		un, err := Transform([]Source{{Name: "fuzz", Data: res.Manifests}}, Options{Uninject: true})
		if err != nil {
			t.Fatalf("output does not uninject: %v\n%s", err, res.Manifests)
		}
		if _, err := Transform([]Source{{Name: "fuzz", Data: un.Manifests}}, o); err != nil {
			t.Fatalf("uninjected output does not inject: %v\n%s", err, un.Manifests)
		}
	})
}
