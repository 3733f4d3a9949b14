package redact

import (
	"strings"
	"testing"
)

// mayHoldSecretRef is the pre-check as first written: a substring search
// for each marker in turn. mayHoldSecret must answer as it does.
func mayHoldSecretRef(s string) bool {
	if strings.Contains(s, "eyJ") || strings.Contains(s, "://") {
		return true
	}
	for _, p := range []string{"k_live_", "k_test_", "AKIA", "xox", "ghp_", "gho_", "ghu_", "ghs_", "ghr_", "github_pat_", "AIza"} {
		if strings.Contains(s, p) {
			return true
		}
	}
	for _, w := range []string{"bearer", "basic", "token", "pass", "pwd", "secret", "key", "jwt", "cookie", "session", "credential", "authorization"} {
		if containsFoldRef(s, w) {
			return true
		}
	}
	return false
}

// containsFoldRef is strings.Contains ignoring ASCII case, for a lower-case word.
func containsFoldRef(s, word string) bool {
	for i := 0; i+len(word) <= len(s); i++ {
		if hasPrefixFold(s[i:], word) {
			return true
		}
	}
	return false
}

var precheckSeeds = []string{
	"", "/api/messages?page=2", "GET", "request completed", "10.1.2.3", "api", "messages",
	"eyJhbGci", "xeyJ", "redis://h", ":/", "sk_live_x", "rk_test_", "k_live", "AKIAX", "akia", "AIzaSy", "aiza",
	"xox", "XOX", "ghp_", "gho_", "ghu_", "ghs_", "ghr_", "gha_", "GHP_", "gh_", "github_pat_", "github_pa",
	"Bearer", "BASIC", "ToKeN", "passenger", "PWD", "Secret", "MONKEY", "JWT", "cookies", "Session",
	"credentials", "AUTHORIZATION", "authorize", "toke", "k", "K", "kEy", "\xffkey", "ke\xc3\xa9y",
}

func TestMayHoldSecretMatchesReference(t *testing.T) {
	for _, s := range precheckSeeds {
		if got, want := mayHoldSecret(s), mayHoldSecretRef(s); got != want {
			t.Errorf("mayHoldSecret(%q) = %v, want %v", s, got, want)
		}
	}
}

// FuzzMayHoldSecret checks the single-pass pre-check against the reference,
// and that a string it lets through is one the patterns leave as it is.
func FuzzMayHoldSecret(f *testing.F) {
	for _, s := range precheckSeeds {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		got := mayHoldSecret(s)
		if want := mayHoldSecretRef(s); got != want {
			t.Fatalf("mayHoldSecret(%q) = %v, reference %v", s, got, want)
		}
		if got {
			return
		}
		for i, re := range textPatterns {
			if re.MatchString(s) {
				t.Fatalf("mayHoldSecret(%q) = false, but pattern %d matches it", s, i)
			}
		}
	})
}

// BenchmarkMayHoldSecret compares the pre-check with the reference on an
// access line's strings, in the same run.
func BenchmarkMayHoldSecret(b *testing.B) {
	line := []string{"request completed", "0f3c9a2e-5b1d-4c7e-9a8f-2d6b1e4c7a90", "api", "GET",
		"/api/conversations/c-1234/messages?page=2&limit=50", "messages", "203.0.113.7"}
	for _, impl := range []struct {
		name string
		f    func(string) bool
	}{{"single-pass", mayHoldSecret}, {"reference", mayHoldSecretRef}} {
		b.Run(impl.name, func(b *testing.B) {
			for i := 0; i < b.N; i++ {
				for _, s := range line {
					if impl.f(s) {
						b.Fatal(s)
					}
				}
			}
		})
	}
}
