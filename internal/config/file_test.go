package config_test

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/chatguard/chatguard/internal/config"
)

// loadProblems loads data as the --config file and returns its problems.
func loadProblems(t *testing.T, data string) config.Problems {
	t.Helper()
	_, err := config.Load(config.Source{Args: []string{"--config", "c.yaml"}, LookupEnv: env{}.lookup,
		ReadFile: func(string) ([]byte, error) { return []byte(data), nil }})
	var probs config.Problems
	if !errors.As(err, &probs) {
		t.Fatalf("Load: %v, want problems", err)
	}
	return probs
}

// Files whose shape would make yaml.v3 take quadratic time and print a
// problem per pair of keys are refused in one pass, each mistake said once
// (QA: 2,000 lines of "k: 1" made 2 million problems and 468 MB).
func TestFileShapeProblems(t *testing.T) {
	t.Parallel()
	manyKeys := func(n int, key func(int) string) string {
		var b strings.Builder
		for i := 0; i < n; i++ {
			fmt.Fprintf(&b, "%s: 1\n", key(i))
		}
		return b.String()
	}
	var manyRoutes strings.Builder
	manyRoutes.WriteString("routes:\n")
	for i := 0; i < 1001; i++ {
		fmt.Fprintf(&manyRoutes, "  - {name: r%d, path: /r%d}\n", i, i)
	}
	tests := []struct {
		name, data string
		want       []string
	}{
		{"one key written 2,000 times", manyKeys(2000, func(int) string { return "k" }),
			[]string{`c.yaml: line 2: the file: key "k" written again (first at line 1)`}},
		{"a key written twice, deeper", "proxy:\n  dial_timeout: 1s\n  max_idle_conns: 3\n  dial_timeout: 2s\n",
			[]string{`c.yaml: line 4: proxy: key "dial_timeout" written again (first at line 2)`}},
		{"two keys each written twice", "a: 1\nb: 1\na: 2\nb: 2\na: 3\n",
			[]string{`c.yaml: line 3: the file: key "a" written again (first at line 1)`, `c.yaml: line 4: the file: key "b" written again (first at line 2)`}},
		{"2,000 distinct keys", manyKeys(2000, func(i int) string { return fmt.Sprintf("k%d", i) }),
			[]string{"c.yaml: line 1: the file holds 2000 keys; no chatguard setting has more than 1000"}},
		{"1,001 routes", manyRoutes.String(),
			[]string{"c.yaml: line 2: routes holds 1001 items; no chatguard list has more than 1000"}},
		{"a second document after an empty one", "listen: :8080\n---\n---\nrate_limit:\n  multiplier: lots\n",
			[]string{"c.yaml: line 3: a second YAML document (after ---): chatguard reads one; merge them"}},
		{"a second document", "listen: :8080\n---\nrate_limit:\n  multiplier: lots\n",
			[]string{"c.yaml: line 2: a second YAML document (after ---): chatguard reads one; merge them"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got := loadProblems(t, tt.data)
			if strings.Join(got, "\n") != strings.Join(tt.want, "\n") {
				t.Errorf("problems:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(tt.want, "\n"))
			}
		})
	}
}

// A trailing document marker, or an empty document, holds no settings.
func TestEmptyLaterDocumentsAreFine(t *testing.T) {
	t.Parallel()
	for _, data := range []string{"listen: \":8080\"\n---\n", "listen: \":8080\"\n...\n---\n", "---\nlisten: \":8080\"\n--- ~\n"} {
		c := mustLoad(t, config.Source{Args: []string{"--config", "c.yaml"}, ReadFile: func(string) ([]byte, error) { return []byte(data), nil }})
		if c.Listen != ":8080" {
			t.Errorf("%q: listen %q", data, c.Listen)
		}
	}
}

// A file with more problems than anyone reads lists the first 50 and
// counts the rest.
func TestFileProblemsAreCapped(t *testing.T) {
	t.Parallel()
	var b strings.Builder
	for i := 0; i < 60; i++ {
		fmt.Fprintf(&b, "unknown_%d: 1\n", i)
	}
	got := loadProblems(t, b.String())
	if len(got) != 51 || got[50] != "… and 10 more problems" {
		t.Fatalf("%d problems, last %q", len(got), got[len(got)-1])
	}
	if !strings.Contains(got[0], "unknown_0") {
		t.Errorf("first problem %q", got[0])
	}
	if got.Total() != 60 {
		t.Errorf("Total() = %d, want 60", got.Total())
	}
	// The error's headline (logged when a reload is refused) counts them all.
	if msg := got.Error(); !strings.HasPrefix(msg, "config: 60 problem(s):\n") {
		t.Errorf("Error() starts %.40q", msg)
	}
}

func TestReadFileRefusesWhatIsNoConfigFile(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	ok := filepath.Join(dir, "ok.yaml")
	if err := os.WriteFile(ok, []byte("listen: :8080\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if data, err := config.ReadFile(ok); err != nil || string(data) != "listen: :8080\n" {
		t.Fatalf("ReadFile(ok) = %q, %v", data, err)
	}
	big := filepath.Join(dir, "big.yaml")
	if err := os.WriteFile(big, make([]byte, config.MaxFileBytes+1), 0o600); err != nil {
		t.Fatal(err)
	}
	fifo := filepath.Join(dir, "fifo")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	for path, want := range map[string]string{
		big:                           "1048577 bytes; a configuration file may hold at most 1048576",
		fifo:                          "is a named pipe, not a regular file",
		dir:                           "is a directory, not a regular file",
		"/dev/zero":                   "is a character device, not a regular file",
		filepath.Join(dir, "missing"): "no such file",
	} {
		if _, err := config.ReadFile(path); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("ReadFile(%s) = %v, want %q", path, err, want)
		}
	}
}

// A file that cannot be read is named once, without Go's operation words
// (QA: "config file: stat missing.yaml: no such file or directory").
func TestUnreadableFileProblem(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	for path, want := range map[string]string{
		filepath.Join(dir, "missing.yaml"): "config file " + filepath.Join(dir, "missing.yaml") + ": no such file or directory",
		dir:                                "config file " + dir + " is a directory, not a regular file",
	} {
		_, err := config.Load(config.Source{Args: []string{"--config=" + path}, ReadFile: config.ReadFile})
		var probs config.Problems
		if !errors.As(err, &probs) || len(probs) != 1 || probs[0] != want {
			t.Errorf("%s: %v, want the one problem %q", path, err, want)
		}
	}
}
