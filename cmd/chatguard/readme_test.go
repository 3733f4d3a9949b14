package main

import (
	"fmt"
	"os"
	"strings"
	"testing"

	"github.com/chatguard/chatguard/internal/config"
)

// The README's configuration table must list every setting with its real
// environment variable, flag and default.
func TestREADMEConfigurationTable(t *testing.T) {
	t.Parallel()
	b, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	readme := string(b)
	def := config.Defaults()
	for _, s := range config.Settings() {
		v := "`" + s.Value(def) + "`"
		if s.Value(def) == "" {
			v = "(empty)"
		}
		row := fmt.Sprintf("| `%s` | `%s` | `--%s` | %s |", s.Key, s.Env, s.Flag, v)
		if !strings.Contains(readme, row) {
			t.Errorf("README lacks the row starting %s", row)
		}
	}
}
