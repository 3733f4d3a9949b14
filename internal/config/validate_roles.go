package config

import (
	"maps"
	"slices"
	"strings"
)

// validateRoleMap checks auth.role_map: every key a role name the token may
// carry, none twice in another case (the claim is compared
// case-insensitively), every value one of the roles limits know.
func validateRoleMap(c *Config, add func(string, string, ...any)) {
	seen := map[string]string{} // lower-cased key → the key as written
	for _, from := range slices.Sorted(maps.Keys(c.Auth.RoleMap)) {
		to := c.Auth.RoleMap[from]
		key := strings.ToLower(strings.TrimSpace(from))
		if key == "" {
			add("auth.role_map", "%q is no role name", from)
			continue
		}
		if other, ok := seen[key]; ok {
			add("auth.role_map", "%q and %q are one role: claim values are compared case-insensitively", other, from)
		}
		seen[key] = from
		if to != "admin" && to != "agent" && to != "basic" {
			add("auth.role_map", "%q maps to %q, which is not admin, agent or basic", from, to)
		}
	}
}
