// Package redisurl reads REDIS_URL the one way both check-config and serve
// read it, so that a URL the first accepts is one the second can use.
package redisurl

import (
	"errors"
	"net/url"
	"strings"

	"github.com/redis/go-redis/v9"
)

// Parse reads redis://[user:password@]host:port[/db][?option=…] or
// rediss:// for one node; a cluster lists more nodes with addr parameters
// (redis://h1:7000?addr=h2:7001&addr=h3:7002), as go-redis's
// ParseClusterURL reads them. Its errors never quote the URL (it may carry
// a password); they name the part that is wrong when that part is safe to
// show.
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
	password, _ := u.User.Password()
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
