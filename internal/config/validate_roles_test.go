package config_test

import (
	"errors"
	"reflect"
	"strings"
	"testing"

	"github.com/chatguard/chatguard/internal/config"
)

// auth.role_map maps the app's role names onto admin, agent and basic: a
// value limits do not know, an empty key, or two keys that differ only in
// case (claims are compared case-insensitively) are refused with the
// file's line (QA: owner/moderator/member/guest could not be given rates).
func TestRoleMapValidation(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		yaml string
		want map[string]string // when valid
		errs []string          // problems, in order
	}{
		{"default", "", map[string]string{}, nil},
		{"flow", "auth: {role_map: {owner: admin, moderator: agent, member: basic}}\n",
			map[string]string{"owner": "admin", "moderator": "agent", "member": "basic"}, nil},
		{"block", "auth:\n  role_map:\n    Owner: admin\n    'https://example.com/mod': agent\n",
			map[string]string{"Owner": "admin", "https://example.com/mod": "agent"}, nil},
		{"null", "auth:\n  role_map:\n", nil, []string{"f.yaml: line 2: auth.role_map has no value"}},
		{"unknown role", "auth:\n  role_claim: roles\n  role_map:\n    owner: root\n    moderator: agent\n", nil,
			[]string{`f.yaml: line 3: auth.role_map: "owner" maps to "root", which is not admin, agent or basic`}},
		{"role in capitals", "auth:\n  role_map: {owner: Admin}\n", nil,
			[]string{`f.yaml: line 2: auth.role_map: "owner" maps to "Admin", which is not admin, agent or basic`}},
		{"anonymous is no role", "auth:\n  role_map: {guest: anonymous}\n", nil,
			[]string{`auth.role_map: "guest" maps to "anonymous", which is not admin, agent or basic`}},
		{"empty value", "auth:\n  role_map: {guest: }\n", nil,
			[]string{`auth.role_map: "guest" maps to "", which is not admin, agent or basic`}},
		{"empty key", "auth:\n  role_map: {' ': admin}\n", nil, []string{`auth.role_map: " " is no role name`}},
		{"one key in two cases", "auth:\n  role_map: {Owner: admin, owner: agent}\n", nil,
			[]string{`auth.role_map: "Owner" and "owner" are one role: claim values are compared case-insensitively`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			c, err := config.Load(config.Source{Args: []string{"--config=f.yaml"}, ReadFile: files{"f.yaml": tt.yaml}.read})
			if tt.errs == nil {
				if err != nil {
					t.Fatalf("Load: %v", err)
				}
				if !reflect.DeepEqual(c.Auth.RoleMap, tt.want) {
					t.Fatalf("auth.role_map = %#v, want %#v", c.Auth.RoleMap, tt.want)
				}
				return
			}
			var probs config.Problems
			if !errors.As(err, &probs) || len(probs) != len(tt.errs) {
				t.Fatalf("Load error = %v, want %d problem(s)", err, len(tt.errs))
			}
			for i, w := range tt.errs {
				if !strings.Contains(probs[i], w) {
					t.Errorf("problem %d = %q, want it to contain %q", i, probs[i], w)
				}
			}
		})
	}
}

// check-config prints auth.role_map among the file-only settings, as the
// file reads (owner=admin), not as Go prints a map (map[owner:admin]).
func TestRoleMapInFileOnly(t *testing.T) {
	t.Parallel()
	value := func(c *config.Config) (string, bool) {
		for _, s := range config.FileOnly(c) {
			if s.Key == "auth.role_map" {
				return s.Value, true
			}
		}
		return "", false
	}
	if v, ok := value(config.Defaults()); !ok || v != "" {
		t.Errorf("default auth.role_map: %q, listed %v; want empty, listed", v, ok)
	}
	c := config.Defaults()
	c.Auth.RoleMap = map[string]string{"owner": "admin", "moderator": "agent", "guest": "basic"}
	if v, _ := value(c); v != "guest=basic,moderator=agent,owner=admin" {
		t.Errorf("auth.role_map printed %q, want guest=basic,moderator=agent,owner=admin", v)
	}
}
