package config

import (
	"bytes"
	"fmt"
	"io"
	"os"

	"gopkg.in/yaml.v3"
)

// MaxFileBytes is the largest configuration file read: a ConfigMap holds at
// most 1 MiB, and chatguard's largest real file is a few kilobytes. A
// larger one (--config /dev/zero, a log file named by mistake) is refused
// before it is read, not read until memory runs out.
const MaxFileBytes = 1 << 20

// Limits of a file's shape, checked on the parsed tree before it is
// decoded: yaml.v3 compares every pair of keys of a mapping, so a 10 KB
// file of one key written 2,000 times made 2 million problems and half a
// gigabyte, and 64,000 distinct keys took 10 s (QA).
const (
	maxMappingKeys  = 1000
	maxSequenceLen  = 1000
	maxFileProblems = 50 // then "… and N more"
)

// ReadFile reads a configuration file: a regular file (a FIFO would block
// serve and every reload for good) of at most MaxFileBytes.
func ReadFile(path string) ([]byte, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return nil, err
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("%s is %s, not a regular file", path, FileKind(fi.Mode()))
	}
	if fi.Size() > MaxFileBytes {
		return nil, fmt.Errorf("%s is %d bytes; a configuration file may hold at most %d (1 MiB)", path, fi.Size(), MaxFileBytes)
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, MaxFileBytes+1))
	if err != nil {
		return nil, err
	}
	if len(data) > MaxFileBytes { // grew since Stat
		return nil, fmt.Errorf("%s holds more than %d bytes (1 MiB)", path, MaxFileBytes)
	}
	return data, nil
}

// parseTree parses data into one YAML document, linearly. A second
// document ("---" and more settings) is a problem: the decoder would
// silently use only the first.
func parseTree(data []byte) (*yaml.Node, error) {
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var root yaml.Node
	if err := dec.Decode(&root); err != nil && err != io.EOF {
		return nil, err
	}
	for {
		var next yaml.Node
		switch err := dec.Decode(&next); {
		case err == io.EOF:
			return &root, nil
		case err != nil:
			return nil, err
		case len(next.Content) > 0 && !(next.Content[0].Kind == yaml.ScalarNode && next.Content[0].Tag == "!!null"):
			return nil, fmt.Errorf("line %d: a second YAML document (after ---): chatguard reads one; merge them", next.Line)
		}
		// An empty document (a trailing "---") holds no settings.
	}
}

// shapeProblems finds, in one pass, what would make decoding the tree slow
// or its problems countless: a key written twice in a mapping (said once
// per key), a mapping or a sequence larger than any chatguard setting.
func shapeProblems(n *yaml.Node) []string {
	var probs []string
	var walk func(n *yaml.Node, path string)
	walk = func(n *yaml.Node, path string) {
		if n == nil {
			return
		}
		switch n.Kind {
		case yaml.DocumentNode:
			for _, c := range n.Content {
				walk(c, path)
			}
		case yaml.MappingNode:
			seen := make(map[string]int, min(len(n.Content)/2, maxMappingKeys+1))
			reported := map[string]bool{}
			var children []int // value indexes of keys seen first
			for i := 0; i+1 < len(n.Content); i += 2 {
				k := n.Content[i]
				if k.Kind == yaml.ScalarNode && k.Value != "<<" {
					if first, dup := seen[k.Value]; dup {
						if !reported[k.Value] {
							reported[k.Value] = true
							probs = append(probs, fmt.Sprintf("line %d: %s: key %q written again (first at line %d)", k.Line, where(path), k.Value, first))
						}
						continue
					}
					seen[k.Value] = k.Line
				}
				children = append(children, i+1)
			}
			if len(children) > maxMappingKeys {
				probs = append(probs, fmt.Sprintf("line %d: %s holds %d keys; no chatguard setting has more than %d", n.Line, where(path), len(children), maxMappingKeys))
				return
			}
			for _, i := range children {
				walk(n.Content[i], join(path, n.Content[i-1].Value))
			}
		case yaml.SequenceNode:
			if len(n.Content) > maxSequenceLen {
				probs = append(probs, fmt.Sprintf("line %d: %s holds %d items; no chatguard list has more than %d", n.Line, where(path), len(n.Content), maxSequenceLen))
				return
			}
			for i, c := range n.Content {
				walk(c, fmt.Sprintf("%s[%d]", path, i))
			}
		}
	}
	walk(n, "")
	return probs
}

func where(path string) string {
	if path == "" {
		return "the file"
	}
	return path
}

func join(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

// Total is how many problems there were, those capProblems left out
// included.
func (p Problems) Total() int {
	if n := len(p); n > 0 {
		var more int
		var word string
		if _, err := fmt.Sscanf(p[n-1], "… and %d more %s", &more, &word); err == nil {
			return n - 1 + more
		}
	}
	return len(p)
}

// capProblems keeps the first maxFileProblems problems and says how many
// more there were.
func capProblems(probs []string) []string {
	if len(probs) <= maxFileProblems {
		return probs
	}
	more := len(probs) - maxFileProblems
	word := "problems"
	if more == 1 {
		word = "problem"
	}
	return append(probs[:maxFileProblems:maxFileProblems], fmt.Sprintf("… and %d more %s", more, word))
}

// FileKind names what a path that is not a regular file is (fs.FileMode's
// own String prints "d---------", which reads as permissions 000).
func FileKind(m os.FileMode) string {
	switch {
	case m.IsDir():
		return "a directory"
	case m&os.ModeNamedPipe != 0:
		return "a named pipe"
	case m&os.ModeSocket != 0:
		return "a socket"
	case m&os.ModeCharDevice != 0:
		return "a character device"
	case m&os.ModeDevice != 0:
		return "a device"
	default:
		return "a special file (" + m.Type().String() + ")"
	}
}
