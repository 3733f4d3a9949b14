package redisurl

import (
	"strings"
	"testing"
)

func TestParse(t *testing.T) {
	ok := []struct {
		url     string
		addrs   []string
		cluster bool
		db      int
	}{
		{"redis://127.0.0.1:6379", []string{"127.0.0.1:6379"}, false, 0},
		{"redis://:s3cret@redis:6380/2", []string{"redis:6380"}, false, 2},
		{"rediss://user:s3cret@redis.example:6380/0?dial_timeout=1s", []string{"redis.example:6380"}, false, 0},
		{"redis://h1:7000?addr=h2:7001&addr=h3:7002", []string{"h1:7000", "h2:7001", "h3:7002"}, true, 0},
	}
	for _, c := range ok {
		o, err := Parse(c.url)
		if err != nil {
			t.Errorf("%s: %v", c.url, err)
			continue
		}
		if strings.Join(o.Addrs, ",") != strings.Join(c.addrs, ",") || o.IsClusterMode != c.cluster || o.DB != c.db || o.ClientName != "chatguard" {
			t.Errorf("%s: %+v", c.url, o)
		}
	}
	bad := []struct{ url, want string }{
		{"", "is not a valid redis:// or rediss:// URL"},
		{"http://h:6379", "is not a valid redis:// or rediss:// URL"},
		{"redis://:s3cret@h:6379/abc", `is not a valid Redis URL (invalid database number: "abc")`},
		{"redis://:s3cret@h:6379/0?foo=bar", "is not a valid Redis URL (unexpected option: foo)"},
		{"redis://:s3cret@h:6379/0?dial_timeout=xx", "is not a valid Redis URL"},
		{"redis://:s3cret@h1:7000?addr=h2:7001&foo=bar", "is not a valid Redis cluster URL (unexpected option: foo)"},
		{"redis://:s3cret@h:6379/%zz", "is not a valid redis:// or rediss:// URL"},
		{"redis://:ab/s3cret@h:6379", "is not a valid redis:// or rediss:// URL (a user name or password holding / ? # @ % : or a space must be percent-encoded"},
		{"rediss://u:s3c ret@h:6379", "is not a valid redis:// or rediss:// URL (a user name or password holding"},
	}
	for _, c := range bad {
		_, err := Parse(c.url)
		if err == nil {
			t.Errorf("%s: accepted", c.url)
			continue
		}
		if !strings.HasPrefix(err.Error(), c.want) || strings.Contains(err.Error(), "s3cret") {
			t.Errorf("%s: %q, want %q and no password", c.url, err, c.want)
		}
	}
}

// No URL, however broken, makes Parse quote its password.
func FuzzParse(f *testing.F) {
	for _, s := range []string{"redis://:pw@h:6379/0", "rediss://u:pw@h:1/x?foo=1", "redis://:pw@h:1?addr=:2&addr=h:3", "redis://:pw@h:6379/0?dial_timeout=pw"} {
		f.Add(s, "pw")
	}
	f.Fuzz(func(t *testing.T, rest, password string) {
		if strings.ContainsAny(password, "@/:?#%[] ") {
			return
		}
		// The marker keeps a password from matching the fixed text of an
		// error by chance ("redi" is in "is not a valid redis:// URL").
		password = "S3cr" + password
		raw := "redis://:" + password + "@" + rest
		if _, err := Parse(raw); err != nil && strings.Contains(err.Error(), password) {
			t.Fatalf("%q: error quotes the password: %v", raw, err)
		}
	})
}
