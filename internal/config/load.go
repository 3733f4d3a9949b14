package config

import (
	"bytes"
	"cmp"
	stderrors "errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"math"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"unicode/utf8"

	"gopkg.in/yaml.v3"

	"github.com/chatguard/chatguard/deploy/config"
)

// Problems lists everything wrong with a configuration; it is an error.
type Problems []string

func (p Problems) Error() string {
	return fmt.Sprintf("config: %d problem(s):\n  - %s", p.Total(), strings.Join(p, "\n  - "))
}

// Defaults returns the built-in configuration, decoded from the embedded
// deploy/config/chatguard.yaml.
func Defaults() *Config {
	c := &Config{}
	if probs, _ := decodeYAML(deployconfig.DefaultYAML, c, "default config"); len(probs) > 0 {
		// The embedded file is tested; reaching this is a build defect.
		panic(Problems(probs).Error())
	}
	return c
}

// Source is where Load reads from. A nil field means: none.
type Source struct {
	Args      []string                    // command-line flags, without the program name
	LookupEnv func(string) (string, bool) // os.LookupEnv in production
	// Environ lists the environment (os.Environ in production): a
	// CHATGUARD_ variable that is no setting is a warning. nil skips it.
	Environ  func() []string
	ReadFile func(string) ([]byte, error) // os.ReadFile in production
	// Output receives -h usage text; nil means io.Discard.
	Output io.Writer
	// Commands are the program's command names: one of them left after
	// the flags was written in the wrong place, and is named as such.
	Commands []string
}

// Load builds the configuration with the precedence flags > environment >
// YAML file (--config / CHATGUARD_CONFIG) > defaults, then validates it. On any
// problem it returns the configuration as far as it got and a Problems error
// that lists all of them. -h returns flag.ErrHelp.
func Load(src Source) (*Config, error) {
	if src.LookupEnv == nil {
		src.LookupEnv = func(string) (string, bool) { return "", false }
	}
	if src.ReadFile == nil {
		src.ReadFile = ReadFile
	}
	c := Defaults()
	var probs Problems

	fs, file, flagValues := newFlagSet(src.Output)
	out := fs.Output()
	fs.SetOutput(io.Discard) // the flag package's usage after each mistake would bury the problems
	for args := src.Args; ; {
		err := fs.Parse(args)
		if err == nil {
			break
		}
		if stderrors.Is(err, flag.ErrHelp) {
			fs.SetOutput(out)
			fs.Usage()
			return c, err
		}
		name, unknown := strings.CutPrefix(err.Error(), "flag provided but not defined: -")
		if !unknown {
			return c, append(probs, err.Error())
		}
		// Report it and read on, so that every problem is printed at once.
		probs = append(probs, unknownFlag(fs, name))
		bad := args[len(args)-len(fs.Args())-1]
		args = fs.Args()
		if !strings.Contains(bad, "=") && len(args) > 0 && !looksLikeFlag(fs, args[0]) {
			// Its value, most likely: not an unexpected argument too, and
			// never quoted, even when it starts with "-" (it may be a
			// secret: --jwt-secrt -x9…). Another flag's name, known or
			// not, is read as the next flag: taken for this one's value,
			// a mistyped --jwt-secrt would go unreported and its secret
			// be left as an unexpected argument (review).
			args = args[1:]
		}
	}
	if fs.NArg() > 0 {
		probs = append(probs, unexpectedArgs(fs.Args(), src.Commands))
	}

	if *file == "" {
		*file, _ = src.LookupEnv("CHATGUARD_CONFIG")
	}
	var inFile yaml.Node
	if *file != "" {
		c.File = *file
		data, err := src.ReadFile(*file)
		if err != nil {
			probs = append(probs, "config file "+fileError(*file, err))
		} else {
			fileProbs, tree := decodeYAML(data, c, *file)
			probs = append(probs, fileProbs...)
			if tree != nil { // nil: a syntax error, reported
				inFile = *tree
			}
		}
	}
	// override sets s from the environment or a flag (by), and notes a
	// value of the file's it replaces: an operator who edits the file (the
	// runbook's multiplier) must hear that the edit changes nothing.
	setBy := map[string]string{} // setting → the env or flag that set it last
	fileVal := map[string]any{}  // setting → its value before the first override
	override := func(s Setting, v, by string) {
		if _, seen := fileVal[s.Key]; !seen {
			fileVal[s.Key] = reflect.ValueOf(s.field(c)).Elem().Interface() // a copy (a slice is replaced, not changed)
		}
		if err := s.set(c, v); err != nil {
			probs = append(probs, fmt.Sprintf("%s (%s): %v", s.Key, by, err))
			return
		}
		setBy[s.Key] = by
		after := reflect.ValueOf(s.field(c)).Elem().Interface()
		// One entry per setting, naming what won: a flag after the
		// environment (QA: both were listed, the variable not in force).
		c.Overridden = slices.DeleteFunc(c.Overridden, func(o string) bool { return strings.HasPrefix(o, s.Key+" (") })
		if !reflect.DeepEqual(fileVal[s.Key], after) && hasPath(&inFile, strings.Split(s.Key, ".")) {
			c.Overridden = append(c.Overridden, fmt.Sprintf("%s (%s)", s.Key, by))
		}
	}

	for _, s := range settings {
		v, ok := src.LookupEnv(s.Env)
		if !ok {
			continue
		}
		override(s, v, "env "+s.Env)
	}
	if src.Environ != nil {
		c.UnknownEnv = unknownEnv(src.Environ())
	}
	fs.Visit(func(f *flag.Flag) {
		for _, s := range settings {
			if s.Flag == f.Name {
				override(s, *flagValues[s.Flag], "flag --"+s.Flag)
			}
		}
	})

	// A setting the file spelled wrong holds its zero value (in a list) or
	// its default: its problem is the spelling, not what validation makes
	// of the value left (rate "many" is not also "got 0").
	misspelt := map[string]bool{}
	for _, p := range probs {
		// Only a value's problem: an unknown key holds no value.
		if m := fileProblemKey.FindStringSubmatch(p); m != nil && !strings.Contains(p, ": not a chatguard setting") {
			misspelt[m[1]] = true
		} else if m != nil {
			// A key spelt wrong leaves the one it meant empty: "paths"
			// for path is the problem, not also "path must start with /".
			if _, near, ok := strings.Cut(p, "(did you mean "); ok {
				parent := m[1][:max(0, strings.LastIndexByte(m[1], '.'))]
				if parent != "" {
					parent += "."
				}
				// Only when that key is absent: written too, its own
				// problem is a second mistake to hear now (review).
				if meant := parent + strings.TrimSuffix(near, "?)"); lineOf(&inFile, meant) == 0 {
					misspelt[meant] = true
				}
			}
		}
	}
	for _, p := range Validate(c) {
		key, msg, ok := strings.Cut(p, ": ")
		switch {
		case ok && misspelt[key]:
			continue
		case !ok:
		case setBy[key] != "": // where the value came from, as a value that does not parse says
			p = fmt.Sprintf("%s (%s): %s", key, setBy[key], msg)
		case c.File != "":
			// A key the file lacks (a limit without key:) is placed at
			// the nearest of its parents the file has (QA: such problems
			// had no line, and came after all the others).
			for k := key; k != ""; k = parentKey(k) {
				if line := lineOf(&inFile, k); line > 0 {
					p = fmt.Sprintf("%s: line %d: %s", c.File, line, p)
					break
				}
			}
		}
		probs = append(probs, p)
	}
	if len(probs) > 0 {
		return c, Problems(capProblems(byLine(probs)))
	}
	return c, nil
}

// parentKey is the setting path one level up ("routes[0].limit" for
// "routes[0].limit.key", "routes[0]" for "routes[0].limit", "routes" for
// "routes[0]"), or "".
func parentKey(k string) string {
	if strings.HasSuffix(k, "]") {
		return k[:max(0, strings.LastIndexByte(k, '['))]
	}
	return k[:max(0, strings.LastIndexByte(k, '.'))]
}

// byLine orders the file's problems by their line, the decoder's and
// validation's together (QA: lines 2, 4, 9, 13, then 1, 5…); problems with
// no line (the environment's, the flags') follow in the order found.
func byLine(probs []string) []string {
	line := func(p string) int {
		if m := problemLine.FindStringSubmatch(p); m != nil {
			if n, err := strconv.Atoi(m[1]); err == nil {
				return n
			}
		}
		return math.MaxInt
	}
	slices.SortStableFunc(probs, func(a, b string) int { return cmp.Compare(line(a), line(b)) })
	return probs
}

// problemLine finds the line in "file.yaml: line 12: …" or "line 12: …".
var problemLine = regexp.MustCompile(`^(?:[^\n]*?: )?line (\d+): `)

// flagName is how chatguard's flags are spelled: two dashes, a lower-case
// word with dashes, and maybe =value.
var flagName = regexp.MustCompile(`^--[a-z][a-z0-9-]*(=|$)`)

// looksLikeFlag reports whether arg is written as a flag: --word, known or
// not, or one of fs's flags with a single dash. A value that starts with
// one dash (-x9Qz…, -5) is not, since an unknown flag's name is printed.
func looksLikeFlag(fs *flag.FlagSet, arg string) bool {
	if flagName.MatchString(arg) {
		return true
	}
	name, ok := strings.CutPrefix(arg, "-")
	if !ok {
		return false
	}
	name, _, _ = strings.Cut(name, "=")
	return fs.Lookup(name) != nil || name == "h" || name == "help"
}

// unexpectedArgs is the problem of arguments left after the flags. They are
// quoted only when they read as plain words (a stray "serve"): anything
// else may be a secret whose flag was mistyped. A command among them was
// written after the flags.
func unexpectedArgs(args, commands []string) string {
	if slices.Contains(commands, args[0]) {
		return fmt.Sprintf("%q is a command: it goes before the flags (chatguard %s [flags])", args[0], args[0])
	}
	shown := make([]string, len(args))
	for i, a := range args {
		if plainWord.MatchString(a) {
			shown[i] = strconv.Quote(a)
		} else {
			shown[i] = fmt.Sprintf("[%d characters, not shown]", len(a))
		}
	}
	return "unexpected arguments: [" + strings.Join(shown, " ") + "]"
}

var plainWord = regexp.MustCompile(`^[a-z][a-z-]{0,15}$`)

// unknownFlag is the problem of a flag fs does not define, with the
// nearest defined name when it is a likely typo.
func unknownFlag(fs *flag.FlagSet, name string) string {
	best, bestDist := "", 3 // more edits than this is not a typo
	fs.VisitAll(func(f *flag.Flag) {
		if d := editDistance(name, f.Name); d < bestDist {
			best, bestDist = f.Name, d
		}
	})
	if best != "" {
		return fmt.Sprintf("unknown flag --%s (did you mean --%s?)", name, best)
	}
	return fmt.Sprintf("unknown flag --%s (chatguard --help lists them)", name)
}

// kubeServiceLink matches the variables Kubernetes writes into every
// container for each Service of the namespace (a Service named chatguard
// gives CHATGUARD_SERVICE_HOST, CHATGUARD_PORT=tcp://…,
// CHATGUARD_PORT_8080_TCP_ADDR…): they are not a user's typos.
var kubeServiceLink = regexp.MustCompile(`_SERVICE_(HOST|PORT)(_[A-Z0-9_]+)?$|_PORT$|_PORT_[0-9]+_(TCP|UDP|SCTP)(_(PROTO|PORT|ADDR))?$`)

// unknownEnv names the environment's CHATGUARD_ variables that are no
// setting, each with the setting it most likely meant: a manifest's
// CHATGUARD_REDIS_URL (the variable is REDIS_URL) left the limits in
// memory, per replica, with nothing said. Values are never shown.
func unknownEnv(environ []string) []string {
	known := map[string]bool{"CHATGUARD_CONFIG": true}
	for _, s := range settings {
		known[s.Env] = true
	}
	var out []string
	for _, kv := range environ {
		name, _, _ := strings.Cut(kv, "=")
		if !strings.HasPrefix(name, "CHATGUARD_") || known[name] || kubeServiceLink.MatchString(name) {
			continue
		}
		best, bestDist := "", -1
		part := strings.TrimPrefix(name, "CHATGUARD_")
		for n := range known {
			np := strings.TrimPrefix(n, "CHATGUARD_") // REDIS_URL, LOG_LEVEL… have no prefix
			d := editDistance(part, np)
			short := min(len(part), len(np))
			// A typo is a few edits for its length, or a name cut short
			// or run on (CHATGUARD_UPSTREAM_URL, CHATGUARD_MULTIPLIER); FOO is not ENV.
			runOn := short >= 4 && (strings.HasPrefix(part, np) || strings.HasPrefix(np, part)) ||
				short >= 6 && (strings.HasSuffix(part, "_"+np) || strings.HasSuffix(np, "_"+part))
			if d > max(1, len(part)/3) && !runOn {
				continue
			}
			if bestDist < 0 || d < bestDist || d == bestDist && n < best {
				best, bestDist = n, d
			}
		}
		msg := "environment variable " + name + " is not a chatguard setting and is ignored"
		if best != "" {
			msg += " (did you mean " + best + "?)"
		} else {
			msg += " (the README's configuration table lists them)"
		}
		out = append(out, msg)
	}
	slices.Sort(out)
	return out
}

// editDistance is the distance between two short names: Levenshtein's,
// with two neighbours swapped counting as one edit (auht for auth, QA).
func editDistance(a, b string) int {
	// Optimal string alignment: three rows, the one before last for swaps.
	prev2 := make([]int, len(b)+1)
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
			if i > 1 && j > 1 && a[i-1] == b[j-2] && a[i-2] == b[j-1] {
				cur[j] = min(cur[j], prev2[j-2]+1)
			}
		}
		prev2, prev, cur = prev, cur, prev2
	}
	return prev[len(b)]
}

func newFlagSet(out io.Writer) (*flag.FlagSet, *string, map[string]*string) {
	if out == nil {
		out = io.Discard
	}
	fs := flag.NewFlagSet("chatguard", flag.ContinueOnError)
	fs.SetOutput(out)
	file := fs.String("config", "", "YAML configuration file (env CHATGUARD_CONFIG)")
	values := make(map[string]*string, len(settings))
	def := Defaults()
	for _, s := range settings {
		v := new(string)
		usage := fmt.Sprintf("%s (env %s, default %q)", s.Help, s.Env, s.Value(def))
		if _, isBool := s.field(def).(*bool); isBool {
			fs.Var(boolFlag{v}, s.Flag, usage)
		} else {
			fs.StringVar(v, s.Flag, "", usage)
		}
		values[s.Flag] = v
	}
	return fs, file, values
}

// boolFlag lets a boolean setting be given bare (--log-file) as well as
// with a value (--log-file=false); the value is parsed with the others.
type boolFlag struct{ v *string }

func (b boolFlag) String() string {
	if b.v == nil {
		return ""
	}
	return *b.v
}
func (b boolFlag) Set(s string) error { *b.v = s; return nil }
func (b boolFlag) IsBoolFlag() bool   { return true }

// fileProblemKey finds the setting a named problem of the file is about
// ("f.yaml: line 4: routes[0].limit.rate: …").
var fileProblemKey = regexp.MustCompile(`: line [0-9]+: ([A-Za-z0-9_.\[\]]+): `)

// decodeYAML decodes data over c, reporting unknown keys and wrong types
// (with line numbers) as problems rather than stopping at the first. It
// returns the parsed tree too (nil when data does not parse).
func decodeYAML(data []byte, c *Config, name string) ([]string, *yaml.Node) {
	tree, err := parseTree(data)
	if err != nil {
		return []string{fmt.Sprintf("%s: %s", name, syntaxProblem(err, data))}, nil
	}
	if probs := shapeProblems(tree); len(probs) > 0 {
		// Not decoded: the decoder's own checks would take quadratic
		// time on such a file, and its problems say nothing more.
		for i, p := range probs {
			probs[i] = fmt.Sprintf("%s: %s", name, p)
		}
		return probs, tree
	}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	err = dec.Decode(c)
	var errs []string
	var te *yaml.TypeError
	switch {
	case err == nil || stderrors.Is(err, io.EOF):
	case stderrors.As(err, &te):
		errs = slices.Clone(te.Errors)
	default:
		return []string{fmt.Sprintf("%s: %v", name, err)}, tree
	}
	// The decoder does not say which field a problem belongs to; the tree
	// parsed above does.
	errs = bareDurations(tree, c, errs)
	for _, p := range fractionalInts(tree, c) {
		if !slices.Contains(errs, p) { // the decoder's own, for one it cannot hold (.inf)
			errs = append(errs, p)
		}
	}
	errs = nameProblems(tree, errs)
	errs = append(errs, nullRoutes(tree)...)
	errs = append(errs, nullSections(tree)...)
	out := make([]string, 0, len(errs))
	for _, e := range errs {
		out = append(out, fmt.Sprintf("%s: %s", name, e))
	}
	return out, tree
}

// fileError says why the file could not be read without Go's operation
// words ("stat missing.yaml: no such file or directory").
func fileError(name string, err error) string {
	var pe *fs.PathError
	if stderrors.As(err, &pe) {
		if pe.Path == name {
			return name + ": " + pe.Err.Error()
		}
		return name + ": " + pe.Path + ": " + pe.Err.Error()
	}
	if msg := err.Error(); strings.HasPrefix(msg, name+" ") {
		return msg // "f.yaml is a directory, not a regular file"
	}
	return name + ": " + err.Error()
}

// syntaxProblem is the YAML parser's error in an operator's words: without
// the "yaml: " of the library, and saying what the usual causes are (QA:
// "found character that cannot start any token" for a tab, "invalid leading
// UTF-8 octet" for a binary file).
func syntaxProblem(err error, data []byte) string {
	msg := strings.TrimPrefix(err.Error(), "yaml: ")
	switch {
	case strings.Contains(msg, "UTF-8") || strings.Contains(msg, "control characters are not allowed"):
		where := ""
		if i := firstBadByte(data); i >= 0 {
			where = fmt.Sprintf("line %d: ", bytes.Count(data[:i], []byte("\n"))+1)
		}
		return where + "the file is not UTF-8 text (a binary file, or another encoding?)"
	case strings.Contains(msg, "found character that cannot start any token") || strings.Contains(msg, "found a tab character"):
		var line int
		if n, _ := fmt.Sscanf(msg, "line %d:", &line); n == 1 {
			if lines := bytes.Split(data, []byte("\n")); line >= 1 && line <= len(lines) && bytes.IndexByte(lines[line-1], '\t') >= 0 {
				return msg + " (a tab: YAML indents with spaces only)"
			}
		}
	}
	return msg
}

// firstBadByte is the offset of the first byte that is not UTF-8 or is a
// control character YAML refuses, or -1.
func firstBadByte(data []byte) int {
	for i := 0; i < len(data); {
		r, size := utf8.DecodeRune(data[i:])
		if r == utf8.RuneError && size <= 1 || r < 0x20 && r != '\t' && r != '\n' && r != '\r' || r == 0x7f {
			return i
		}
		i += size
	}
	return -1
}
