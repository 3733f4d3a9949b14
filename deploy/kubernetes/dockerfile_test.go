package kubernetes_test

import (
	"bufio"
	"debug/buildinfo"
	"debug/elf"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/chatguard/chatguard/internal/config"
)

// repoRoot is the module root, seen from this package's directory.
const repoRoot = "../.."

// instruction is one Dockerfile instruction, continuation lines joined.
type instruction struct {
	line int
	cmd  string // upper case: FROM, RUN, …
	args string
}

func (i instruction) String() string { return fmt.Sprintf("Dockerfile:%d %s", i.line, i.cmd) }

// stage is one FROM and what follows it.
type stage struct {
	from  instruction
	image string
	name  string // AS name; "" when unnamed
	ins   []instruction
}

// parseDockerfile reads instructions: comments and blank lines dropped
// (inside continuations too), lines ending in a backslash joined.
func parseDockerfile(data string) ([]*stage, error) {
	var stages []*stage
	var cur strings.Builder
	start := 0
	sc := bufio.NewScanner(strings.NewReader(data))
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		if cur.Len() == 0 {
			start = n
		}
		if cont, ok := strings.CutSuffix(line, `\`); ok {
			cur.WriteString(cont + " ")
			continue
		}
		cur.WriteString(line)
		cmd, args, _ := strings.Cut(cur.String(), " ")
		cur.Reset()
		in := instruction{line: start, cmd: strings.ToUpper(cmd), args: strings.TrimSpace(args)}
		if in.cmd == "FROM" {
			words := slices.DeleteFunc(strings.Fields(in.args), func(w string) bool { return strings.HasPrefix(w, "--") })
			if len(words) == 0 {
				return nil, fmt.Errorf("%s: no image", in)
			}
			st := &stage{from: in, image: words[0]}
			if len(words) == 3 && strings.EqualFold(words[1], "AS") {
				st.name = words[2]
			}
			stages = append(stages, st)
			continue
		}
		if len(stages) == 0 {
			if in.cmd != "ARG" {
				return nil, fmt.Errorf("%s before the first FROM", in)
			}
			continue
		}
		stages[len(stages)-1].ins = append(stages[len(stages)-1].ins, in)
	}
	return stages, sc.Err()
}

// shellWords splits a shell command line into words, honouring quotes and
// backslashes (enough for RUN lines; no expansion).
func shellWords(s string) []string {
	var words []string
	var w strings.Builder
	inWord := false
	var quote rune
	for i := 0; i < len(s); i++ {
		c := rune(s[i])
		switch {
		case quote != 0 && c == quote:
			quote = 0
		case quote == '\'':
			w.WriteRune(c)
		case c == '\\' && i+1 < len(s):
			i++
			w.WriteByte(s[i])
			inWord = true
		case quote == '"':
			w.WriteRune(c)
		case c == '"' || c == '\'':
			quote, inWord = c, true
		case c == ' ' || c == '\t':
			if inWord {
				words = append(words, w.String())
				w.Reset()
				inWord = false
			}
		default:
			w.WriteRune(c)
			inWord = true
		}
	}
	if inWord {
		words = append(words, w.String())
	}
	return words
}

// goBuild is the `go build` of a RUN instruction.
type goBuild struct {
	in      instruction
	env     map[string]string // VAR=value words before `go`
	argv    []string          // from "go" on
	ldflags string
	out     string // -o
	pkg     string // the last word
}

func findGoBuild(st *stage) (*goBuild, bool) {
	for _, in := range st.ins {
		if in.cmd != "RUN" {
			continue
		}
		words := slices.DeleteFunc(shellWords(in.args), func(w string) bool { return strings.HasPrefix(w, "--mount=") })
		i := slices.Index(words, "go")
		if i < 0 || i+1 >= len(words) || words[i+1] != "build" {
			continue
		}
		b := &goBuild{in: in, env: map[string]string{}, argv: words[i:], pkg: words[len(words)-1]}
		for _, w := range words[:i] {
			if k, v, ok := strings.Cut(w, "="); ok {
				b.env[k] = v
			}
		}
		for j, w := range b.argv {
			if j+1 < len(b.argv) && w == "-ldflags" {
				b.ldflags = b.argv[j+1]
			}
			if j+1 < len(b.argv) && w == "-o" {
				b.out = b.argv[j+1]
			}
		}
		return b, true
	}
	return nil, false
}

// makeVars reads the simple variable assignments of the Makefile.
func makeVars(t *testing.T) map[string]string {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(repoRoot, "Makefile"))
	if err != nil {
		t.Fatal(err)
	}
	vars := map[string]string{}
	assign := regexp.MustCompile(`^([A-Z_]+)\s*[?:]?=\s*(.*)$`)
	for line := range strings.Lines(string(data)) {
		if m := assign.FindStringSubmatch(strings.TrimSpace(line)); m != nil {
			vars[m[1]] = m[2]
		}
	}
	vars["LDFLAGS"] = strings.ReplaceAll(vars["LDFLAGS"], "$(PKG)", vars["PKG"])
	return vars
}

// ldflagsShape reduces -ldflags to what must agree between the Makefile and
// the Dockerfile: the plain flags, and the variables each -X sets (values
// differ: make variables there, build ARGs here).
func ldflagsShape(flags string) (plain, xs []string, values map[string]string) {
	values = map[string]string{}
	words := strings.Fields(flags)
	for i := 0; i < len(words); i++ {
		if words[i] == "-X" && i+1 < len(words) {
			k, v, _ := strings.Cut(words[i+1], "=")
			xs = append(xs, k)
			values[k] = v
			i++
			continue
		}
		plain = append(plain, words[i])
	}
	slices.Sort(plain)
	slices.Sort(xs)
	return plain, xs, values
}

func readDockerfile(t *testing.T) []*stage {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(repoRoot, "Dockerfile"))
	if err != nil {
		t.Fatal(err)
	}
	stages, err := parseDockerfile(string(data))
	if err != nil {
		t.Fatal(err)
	}
	if len(stages) < 2 {
		t.Fatalf("Dockerfile has %d stage(s); want a build stage and a final one", len(stages))
	}
	return stages
}

// goMinor is go.mod's Go version as major.minor ("1.26").
func goMinor(t *testing.T) string {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(repoRoot, "go.mod"))
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`(?m)^go (\d+\.\d+)`).FindStringSubmatch(string(data))
	if m == nil {
		t.Fatal("go.mod has no go line")
	}
	return m[1]
}

func TestDockerfileBuildStage(t *testing.T) {
	t.Parallel()
	stages := readDockerfile(t)
	var build *goBuild
	var buildStage *stage
	for _, st := range stages {
		if b, ok := findGoBuild(st); ok {
			build, buildStage = b, st
		}
	}
	if build == nil {
		t.Fatal("no stage runs go build")
	}
	if buildStage == stages[len(stages)-1] {
		t.Error("go build runs in the final stage; the image would carry the toolchain")
	}
	if want := regexp.MustCompile(`^golang:` + regexp.QuoteMeta(goMinor(t)) + `(\.\d+)?-[a-z]+$`); !want.MatchString(buildStage.image) {
		t.Errorf("%s: build image %q; want a pinned golang:%s-<debian release> tag (go.mod's Go)", buildStage.from, buildStage.image, goMinor(t))
	}
	if build.env["CGO_ENABLED"] != "0" {
		t.Errorf("%s: go build without CGO_ENABLED=0: the binary would need libc, which distroless static lacks", build.in)
	}
	if !slices.Contains(build.argv, "-trimpath") {
		t.Errorf("%s: go build without -trimpath", build.in)
	}
	if build.pkg != "./cmd/chatguard" {
		t.Errorf("%s: builds %q, want ./cmd/chatguard", build.in, build.pkg)
	}

	vars := makeVars(t)
	mkPlain, mkXs, _ := ldflagsShape(vars["LDFLAGS"])
	plain, xs, values := ldflagsShape(build.ldflags)
	if !slices.Equal(plain, mkPlain) || !slices.Equal(xs, mkXs) {
		t.Errorf("%s: -ldflags %q; the Makefile's are %q (flags %v, -X %v)", build.in, build.ldflags, vars["LDFLAGS"], mkPlain, mkXs)
	}
	if len(mkXs) == 0 {
		t.Errorf("Makefile LDFLAGS set no -X version variables: %q", vars["LDFLAGS"])
	}
	args := declaredArgs(buildStage, build.in.line)
	for k, v := range values {
		name := strings.Trim(strings.TrimPrefix(v, "$"), "{}")
		if !strings.HasPrefix(v, "$") || !args[name] {
			t.Errorf("%s: -X %s=%s is not a build ARG declared in the stage before it", build.in, k, v)
		}
	}
	// The Makefile's build is the same command.
	makefile, _ := os.ReadFile(filepath.Join(repoRoot, "Makefile"))
	recipe := regexp.MustCompile(`(?m)^build:.*\n\t(.*)$`).FindSubmatch(makefile)
	if recipe == nil || !strings.Contains(string(recipe[1]), "CGO_ENABLED=0") || !strings.Contains(string(recipe[1]), "-trimpath") ||
		!strings.Contains(string(recipe[1]), "$(LDFLAGS)") || !strings.HasSuffix(strings.TrimSpace(string(recipe[1])), "./cmd/chatguard") {
		t.Errorf("Makefile build recipe differs from the Dockerfile's build: %q", recipe)
	}
}

// declaredArgs are the ARGs of st declared before line.
func declaredArgs(st *stage, line int) map[string]bool {
	args := map[string]bool{}
	for _, in := range st.ins {
		if in.cmd == "ARG" && in.line < line {
			for _, w := range strings.Fields(in.args) {
				name, _, _ := strings.Cut(w, "=")
				args[name] = true
			}
		}
	}
	return args
}

func TestDockerfileFinalStage(t *testing.T) {
	t.Parallel()
	stages := readDockerfile(t)
	final := stages[len(stages)-1]
	repo, tag, _ := strings.Cut(final.image, ":")
	if !strings.HasPrefix(repo, "gcr.io/distroless/static") || tag != "nonroot" {
		t.Errorf("%s: final image %q; want gcr.io/distroless/static…:nonroot", final.from, final.image)
	}
	var build *goBuild
	for _, st := range stages {
		if b, ok := findGoBuild(st); ok {
			build = b
		}
	}
	last := map[string]instruction{}
	labels := map[string]bool{}
	var copied []string // destinations of the binary
	for _, in := range final.ins {
		last[in.cmd] = in
		switch in.cmd {
		case "COPY":
			w := shellWords(in.args)
			if len(w) == 3 && strings.HasPrefix(w[0], "--from=") && build != nil && w[1] == build.out {
				copied = append(copied, w[2])
			}
		case "LABEL":
			for _, kv := range shellWords(in.args) {
				k, _, _ := strings.Cut(kv, "=")
				labels[k] = true
			}
		}
	}
	for _, k := range []string{"title", "source", "version", "revision", "created"} {
		if !labels["org.opencontainers.image."+k] {
			t.Errorf("final stage: no LABEL org.opencontainers.image.%s", k)
		}
	}

	var entry, cmd []string
	if err := json.Unmarshal([]byte(last["ENTRYPOINT"].args), &entry); err != nil || len(entry) == 0 {
		t.Errorf("ENTRYPOINT %q is not exec form (a JSON array): chatguard would not be PID 1 and would miss SIGTERM", last["ENTRYPOINT"].args)
	} else if !slices.Contains(copied, entry[0]) {
		t.Errorf("ENTRYPOINT runs %q; the binary built at %q is copied to %v", entry[0], build.out, copied)
	}
	if err := json.Unmarshal([]byte(last["CMD"].args), &cmd); err != nil || !slices.Equal(cmd, []string{"serve"}) {
		t.Errorf("CMD %q; want exec form [\"serve\"]", last["CMD"].args)
	}

	user, group, _ := strings.Cut(last["USER"].args, ":")
	if uid, err := strconv.Atoi(user); err != nil || uid == 0 {
		t.Errorf("USER %q: want a numeric non-root uid (runAsNonRoot can only verify a number)", last["USER"].args)
	}
	if gid, err := strconv.Atoi(group); group != "" && (err != nil || gid == 0) {
		t.Errorf("USER %q: want a numeric non-root gid", last["USER"].args)
	}
	if wd := last["WORKDIR"].args; wd != imageWorkdir {
		t.Errorf("WORKDIR %q; the manifests' checks resolve relative paths against %q", wd, imageWorkdir)
	}

	exposed := map[string]bool{}
	for _, in := range final.ins {
		if in.cmd == "EXPOSE" {
			for _, p := range strings.Fields(in.args) {
				exposed[strings.TrimSuffix(p, "/tcp")] = true
			}
		}
	}
	def := config.Defaults()
	for _, addr := range []string{def.Listen, def.AdminListen} {
		if p := strconv.Itoa(listenPort(addr)); !exposed[p] {
			t.Errorf("EXPOSE does not declare %s (default listener %q)", p, addr)
		}
	}
}

// TestDockerfileBuildCommand runs the Dockerfile's go build here, with its
// flags and build-arg values substituted, and checks what it makes: a static
// binary that reports the injected version.
func TestDockerfileBuildCommand(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary")
	}
	goBin, err := exec.LookPath("go")
	if err != nil {
		t.Skip("no go command:", err)
	}
	t.Parallel()
	var build *goBuild
	for _, st := range readDockerfile(t) {
		if b, ok := findGoBuild(st); ok {
			build = b
		}
	}
	if build == nil {
		t.Fatal("no go build in the Dockerfile")
	}
	bin := filepath.Join(t.TempDir(), "chatguard")
	want := map[string]string{"VERSION": "9.8.7-test", "REVISION": "0123abcd", "BUILD_DATE": "2026-01-30T19:45:30Z"}
	expand := func(s string) string {
		return os.Expand(s, func(k string) string { return want[k] }) // TARGETOS, TARGETARCH: "" = this machine
	}
	argv := slices.Clone(build.argv[1:])
	for i := range argv {
		argv[i] = expand(argv[i])
		if i > 0 && argv[i-1] == "-o" {
			argv[i] = bin
		}
	}
	cmd := exec.Command(goBin, argv...)
	cmd.Dir = repoRoot
	cmd.Env = os.Environ()
	for k, v := range build.env {
		if v = expand(v); v != "" {
			cmd.Env = append(cmd.Env, k+"="+v)
		}
	}
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go %s: %v\n%s", strings.Join(argv, " "), err, out)
	}

	out, err := exec.Command(bin, "version").Output()
	if err != nil {
		t.Fatalf("chatguard version: %v", err)
	}
	var info struct{ Version, Revision, BuildDate string }
	if err := json.Unmarshal(out, &info); err != nil {
		t.Fatalf("chatguard version: %v: %s", err, out)
	}
	if info.Version != want["VERSION"] || info.Revision != want["REVISION"] || info.BuildDate != want["BUILD_DATE"] {
		t.Errorf("chatguard version = %+v; want the injected %v", info, want)
	}

	f, err := elf.Open(bin)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			t.Error("the binary has a dynamic loader (PT_INTERP): not static")
		}
	}
	if libs, _ := f.ImportedLibraries(); len(libs) > 0 {
		t.Errorf("the binary links %v: not static", libs)
	}
	bi, err := buildinfo.ReadFile(bin)
	if err != nil {
		t.Fatal(err)
	}
	settings := map[string]string{}
	for _, s := range bi.Settings {
		settings[s.Key] = s.Value
	}
	if settings["CGO_ENABLED"] != "0" || settings["-trimpath"] != "true" {
		t.Errorf("build settings CGO_ENABLED=%q -trimpath=%q", settings["CGO_ENABLED"], settings["-trimpath"])
	}
}
