package kubernetes_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// ignoreRule is one .dockerignore line.
type ignoreRule struct {
	re     *regexp.Regexp
	negate bool
}

// parseDockerignore compiles the .dockerignore syntax the file uses: paths
// relative to the context, *, ?, ** (any number of directories), ! to keep.
// A pattern that matches a directory excludes everything below it.
func parseDockerignore(data string) []ignoreRule {
	var rules []ignoreRule
	for line := range strings.Lines(data) {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		r := ignoreRule{}
		if p, ok := strings.CutPrefix(line, "!"); ok {
			r.negate, line = true, p
		}
		line = strings.TrimPrefix(filepath.ToSlash(filepath.Clean(line)), "/")
		var re strings.Builder
		re.WriteString("^")
		for i := 0; i < len(line); i++ {
			switch c := line[i]; {
			case strings.HasPrefix(line[i:], "**/"):
				re.WriteString("(.*/)?")
				i += 2
			case strings.HasPrefix(line[i:], "**"):
				re.WriteString(".*")
				i++
			case c == '*':
				re.WriteString("[^/]*")
			case c == '?':
				re.WriteString("[^/]")
			default:
				re.WriteString(regexp.QuoteMeta(string(c)))
			}
		}
		re.WriteString("(/.*)?$") // the path itself, or anything below it
		r.re = regexp.MustCompile(re.String())
		rules = append(rules, r)
	}
	return rules
}

// ignored applies the rules in order; the last one that matches decides.
func ignored(rules []ignoreRule, path string) bool {
	out := false
	for _, r := range rules {
		if r.re.MatchString(path) {
			out = !r.negate
		}
	}
	return out
}

// TestDockerignore: the build context keeps every file the binary is built
// from (each Go and embedded file of every package of the main module that
// ./cmd/chatguard imports, go.mod, go.sum) and leaves out the repository's
// history and node_modules.
func TestDockerignore(t *testing.T) {
	goBin, err := exec.LookPath("go")
	if err != nil {
		t.Skip("no go command:", err)
	}
	t.Parallel()
	data, err := os.ReadFile(filepath.Join(repoRoot, ".dockerignore"))
	if err != nil {
		t.Fatal(err)
	}
	rules := parseDockerignore(string(data))

	cmd := exec.Command(goBin, "list", "-deps", "-f",
		`{{if .Module}}{{if .Module.Main}}{{range .GoFiles}}{{$.Dir}}/{{.}}{{"\n"}}{{end}}{{range .EmbedFiles}}{{$.Dir}}/{{.}}{{"\n"}}{{end}}{{end}}{{end}}`,
		"./cmd/chatguard")
	cmd.Dir = repoRoot
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	root, err := filepath.Abs(repoRoot)
	if err != nil {
		t.Fatal(err)
	}
	need := []string{"go.mod", "go.sum"}
	for _, f := range strings.Fields(string(out)) {
		rel, err := filepath.Rel(root, f)
		if err != nil {
			t.Fatal(err)
		}
		need = append(need, filepath.ToSlash(rel))
	}
	if len(need) < 10 {
		t.Fatalf("go list found only %v", need)
	}
	for _, f := range need {
		if ignored(rules, f) {
			t.Errorf(".dockerignore leaves %s out of the build context; the image build needs it", f)
		}
	}
	for _, f := range []string{".git/HEAD", "examples/legacy-chat/node_modules/socket.io/package.json", "bin/chatguard", "temp/rate-limits.json"} {
		if !ignored(rules, f) {
			t.Errorf(".dockerignore keeps %s in the build context", f)
		}
	}
}
