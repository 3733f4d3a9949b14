// Package redisurl reads REDIS_URL the one way both check-config and serve
// read it, so that a URL the first accepts is one the second can use.
package redisurl

import (
	"errors"
	"fmt"
	"net/url"
	"strings"

	"github.com/redis/go-redis/v9"
)

// Parse reads redis://[user:password@]host:port[/db][?option=…] or
// rediss:// for one node; a cluster lists more nodes with addr parameters
// (redis://h1:7000?addr=h2:7001&addr=h3:7002), as go-redis's
// ParseClusterURL reads them; a master_name parameter makes the host and
// the addr parameters Redis Sentinels that name the master
// (redis://s1:26379?master_name=mymaster&addr=s2:26379), as go-redis's
// ParseFailoverURL reads them (see sentinel). Its errors never quote the
// URL (it may carry a password); they name the part that is wrong when that
// part is safe to show.
func Parse(raw string) (redis.UniversalOptions, error) {
	var o redis.UniversalOptions
	u, err := url.Parse(raw)
	if err != nil || (u.Scheme != "redis" && u.Scheme != "rediss") || u.Host == "" {
		lower := strings.ToLower(raw)
		if (strings.HasPrefix(lower, "redis://") || strings.HasPrefix(lower, "rediss://")) && strings.Contains(raw, "@") {
			// Never the reason url.Parse gives, which may quote the
			// password: what usually breaks such a URL (QA: a generated
			// base64 password holding "/").
			return o, errors.New("is not a valid redis:// or rediss:// URL (a user name or password holding / ? # @ % : or a space must be percent-encoded, / as %2F)")
		}
		return o, errors.New("is not a valid redis:// or rediss:// URL")
	}
	if strings.Contains(raw, "#") {
		// A fragment means nothing to Redis: it is a '#' left unencoded,
		// in a password above all, which cut the URL there, so that
		// "redis://app:2024#Summer@redis:6379" dialled host app, port 2024,
		// and the start line showed the password's start (review).
		return o, errors.New("is not a valid redis:// or rediss:// URL (it holds a '#': in a user name or password it must be percent-encoded, as %23)")
	}
	for name, values := range u.Query() {
		if len(values) > 1 && name != "addr" {
			// go-redis takes the last, chatguard's checks the first: with
			// skip_verify=false&skip_verify=true the certificate went
			// unchecked and unwarned (review).
			return o, errors.New("is not a valid Redis URL (option " + name + " is given more than once)")
		}
	}
	if strings.Trim(u.Path, "/") != "" && u.Query().Has("db") {
		// go-redis takes the query's, silently (review): say which to keep.
		return o, errors.New("is not a valid Redis URL (a database in the path and a db option: give one)")
	}
	password, _ := u.User.Password()
	if u.Query().Has("master_name") {
		return sentinel(raw, u, password)
	}
	if strings.Contains(u.Query().Encode(), "addr=") || u.Query().Has("addr") {
		copt, err := redis.ParseClusterURL(raw)
		if err != nil {
			return o, reason("is not a valid Redis cluster URL", err, password)
		}
		return redis.UniversalOptions{
			Addrs: copt.Addrs, Username: copt.Username, Password: copt.Password,
			TLSConfig: copt.TLSConfig, ClientName: "chatguard", IsClusterMode: true,
		}, nil
	}
	opt, err := redis.ParseURL(raw)
	if err != nil {
		return o, reason("is not a valid Redis URL", err, password)
	}
	return redis.UniversalOptions{
		Addrs: []string{opt.Addr}, DB: opt.DB, Username: opt.Username, Password: opt.Password,
		TLSConfig: opt.TLSConfig, ClientName: "chatguard",
	}, nil
}

// notForSentinel are ParseFailoverURL's options chatguard refuses: the
// master's credentials are the URL's own (a password in a query would be
// quoted where the URL's user information is filtered out), and chatguard
// writes, so it talks to the master alone (a replica answers READONLY; a
// route_* option makes go-redis route commands as a cluster client).
var notForSentinel = map[string]string{
	"username":                   "the user name goes before the host (redis://user:password@sentinel:26379)",
	"password":                   "the password goes before the host (redis://:password@sentinel:26379)",
	"replica_only":               "chatguard writes, so it talks to the master only",
	"use_disconnected_replicas":  "chatguard writes, so it talks to the master only",
	"route_by_latency":           "chatguard writes, so it talks to the master only",
	"route_by_latency_tolerance": "chatguard writes, so it talks to the master only",
	"route_randomly":             "chatguard writes, so it talks to the master only",
}

// sentinel reads a Sentinel URL: the host and each addr parameter are
// sentinels, master_name the master they watch. The URL's user and
// password are given to the master (and its replicas, once promoted) and to
// the sentinels alike: go-redis's ParseFailoverURL gives them to the
// sentinels only and takes the master's from username= and password=
// options. One set fits both common setups: sentinels that require the same
// password as Redis (the Bitnami chart's default, auth.sentinel: true), and
// sentinels with no password, since a Redis 6 or later sentinel whose
// default user has none accepts any password for it (HELLO … AUTH default,
// as go-redis logs in). Sentinels with a password of their own, or an ACL
// user they do not know, are not supported.
func sentinel(raw string, u *url.URL, password string) (redis.UniversalOptions, error) {
	var o redis.UniversalOptions
	const what = "is not a valid Redis Sentinel URL"
	q := u.Query()
	for name := range q {
		if why, ok := notForSentinel[name]; ok {
			return o, fmt.Errorf("%s (option %s is not taken: %s)", what, name, why)
		}
	}
	if strings.TrimSpace(q.Get("master_name")) == "" {
		return o, errors.New(what + " (master_name is empty: give the name the sentinels monitor, mymaster by default)")
	}
	fo, err := redis.ParseFailoverURL(raw)
	if err != nil {
		return o, reason(what, err, password)
	}
	return redis.UniversalOptions{
		Addrs: fo.SentinelAddrs, MasterName: fo.MasterName, DB: fo.DB,
		Username: fo.SentinelUsername, Password: fo.SentinelPassword,
		SentinelUsername: fo.SentinelUsername, SentinelPassword: fo.SentinelPassword,
		TLSConfig: fo.TLSConfig, ClientName: "chatguard",
	}, nil
}

// Describe says in a few words which Redis the options name, without
// credentials: "sentinel master mymaster via 3 sentinels", "cluster of 3
// seed nodes", "node redis:6379".
func Describe(o redis.UniversalOptions) string {
	plural := func(n int, one string) string {
		if n == 1 {
			return "1 " + one
		}
		return fmt.Sprintf("%d %ss", n, one)
	}
	switch {
	case o.MasterName != "" && o.Password != "" && strings.Contains(o.MasterName, o.Password):
		return "sentinel master (its name holds the password) via " + plural(len(o.Addrs), "sentinel")
	case o.MasterName != "":
		return fmt.Sprintf("sentinel master %s via %s", o.MasterName, plural(len(o.Addrs), "sentinel"))
	case o.IsClusterMode:
		return "cluster from " + plural(len(o.Addrs), "seed node")
	case len(o.Addrs) == 1:
		return "node " + o.Addrs[0]
	}
	return ""
}

// reason is what an error is about ("unexpected option: foo", "invalid
// database number: \"abc\""), unless it could show the password.
func reason(what string, err error, password string) error {
	msg := strings.TrimPrefix(err.Error(), "redis: ")
	var uerr *url.Error
	if errors.As(err, &uerr) || (password != "" && strings.Contains(msg, password)) || strings.Contains(msg, "@") {
		return errors.New(what)
	}
	return errors.New(what + " (" + msg + ")")
}
