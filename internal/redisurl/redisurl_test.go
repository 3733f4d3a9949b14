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
		// Sentinels; a master_name with addr parameters is not a cluster.
		{"redis://:s3cret@s1:26379/3?master_name=mymaster&addr=s2:26379&addr=s3:26379", []string{"s1:26379", "s2:26379", "s3:26379"}, false, 3},
		{"rediss://s1?master_name=mymaster&dial_timeout=1s", []string{"s1:6379"}, false, 0},
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
		{"redis://:s3cret@s1:26379?master_name=", "is not a valid Redis Sentinel URL (master_name is empty"},
		{"redis://:s3cret@s1:26379?master_name=m&addr=s2", "is not a valid Redis Sentinel URL (unable to parse addr param: s2)"},
		{"redis://:s3cret@s1:26379/x?master_name=m", `is not a valid Redis Sentinel URL (invalid database number: "x")`},
		{"redis://:s3cret@s1:26379?master_name=m&foo=1", "is not a valid Redis Sentinel URL (unexpected option: foo)"},
		{"redis://:s3cret@s1:26379?master_name=m&dial_timeout=s3cret", "is not a valid Redis Sentinel URL"},
		{"redis://s1:26379?master_name=m&password=s3cret", "is not a valid Redis Sentinel URL (option password is not taken: the password goes before the host"},
		{"redis://s1:26379?master_name=m&username=u", "is not a valid Redis Sentinel URL (option username is not taken"},
		{"redis://:s3cret@s1:26379?master_name=m&replica_only=true", "is not a valid Redis Sentinel URL (option replica_only is not taken: chatguard writes"},
		{"redis://:s3cret@s1:26379?master_name=m&route_randomly=true", "is not a valid Redis Sentinel URL (option route_randomly is not taken"},
		// A '#' left in a password cut the URL there: host "app", port the
		// password's digits (review).
		{"redis://app:2024#s3cret@redis.internal:6379", "is not a valid redis:// or rediss:// URL (it holds a '#'"},
		{"redis://:1234#s3cret@h:6379", "is not a valid redis:// or rediss:// URL (it holds a '#'"},
		// go-redis takes an option's last value, the checks its first (review).
		{"rediss://:s3cret@h:6379?skip_verify=false&skip_verify=true", "is not a valid Redis URL (option skip_verify is given more than once)"},
		{"redis://:s3cret@s1:26379?master_name=m&master_name=", "is not a valid Redis URL (option master_name is given more than once)"},
		{"redis://:s3cret@s1:26379/3?master_name=m&db=5", "is not a valid Redis URL (a database in the path and a db option: give one)"},
		{"redis://:s3cret@h:6379/3?db=5", "is not a valid Redis URL (a database in the path and a db option: give one)"},
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
	for _, s := range []string{"redis://:pw@h:6379/0", "rediss://u:pw@h:1/x?foo=1", "redis://:pw@h:1?addr=:2&addr=h:3", "redis://:pw@h:6379/0?dial_timeout=pw",
		"redis://:pw@s:26379/1?master_name=m&addr=s2:26379", "rediss://u:pw@s:1/x?master_name=pw&addr=pw", "redis://:pw@s:1?master_name=m&read_timeout=pw"} {
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
		o, err := Parse(raw)
		if err != nil && strings.Contains(err.Error(), password) {
			t.Fatalf("%q: error quotes the password: %v", raw, err)
		}
		if err == nil && strings.Contains(Describe(o), password) {
			t.Fatalf("%q: description quotes the password: %s", raw, Describe(o))
		}
		if err == nil && o.MasterName != "" && (o.Password != o.SentinelPassword || o.IsClusterMode) {
			t.Fatalf("%q: sentinel options %+v", raw, o)
		}
	})
}

// A Sentinel URL's user and password go to the master and to the sentinels
// alike (go-redis's ParseFailoverURL gives them to the sentinels only).
func TestParseSentinelCredentials(t *testing.T) {
	o, err := Parse("rediss://default:s3cret@s1:26379/2?master_name=mymaster&addr=s2:26379")
	if err != nil {
		t.Fatal(err)
	}
	if o.MasterName != "mymaster" || o.Username != "default" || o.Password != "s3cret" || o.SentinelUsername != "default" || o.SentinelPassword != "s3cret" ||
		o.TLSConfig == nil || o.DB != 2 || o.ClientName != "chatguard" {
		t.Fatalf("%+v", o)
	}
	for url, want := range map[string]string{
		"redis://:pw@s1:26379?master_name=mymaster&addr=s2:26379&addr=s3:26379": "sentinel master mymaster via 3 sentinels",
		"redis://s1:26379?master_name=mymaster":                                 "sentinel master mymaster via 1 sentinel",
		"redis://h1:7000?addr=h2:7001":                                          "cluster from 2 seed nodes",
		"redis://:pw@redis:6380/1":                                              "node redis:6380",
	} {
		o, err := Parse(url)
		if err != nil || Describe(o) != want {
			t.Errorf("%s: %q %v, want %q", url, Describe(o), err, want)
		}
	}
}
