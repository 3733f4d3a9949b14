package userkey_test

import (
	"testing"
	"time"

	"github.com/chatguard/chatguard/internal/config"
	"github.com/chatguard/chatguard/internal/identity/userkey"
	"github.com/chatguard/chatguard/limiter"
)

// The limiter's user key part and Normalise must stay one rule: a user the
// limiter counts as one must be one in presence, socket caps and kicks.
func TestLimiterAgreesWithNormalise(t *testing.T) {
	t.Parallel()
	p := limiter.NewPolicy("p", config.RouteLimit{Rate: 1, Period: time.Minute, Key: []string{"user"}}, 1)
	for _, u := range []string{"bob@example.com", "Bob@Example.com", " BOB@EXAMPLE.COM ", "Ünal@Example.com", "Carol", "carol", "auth0|AbC"} {
		if got, want := p.KeyFor(limiter.Request{User: u}), "p|user="+userkey.Normalise(u); got != want {
			t.Errorf("limiter key of %q = %q, want %q", u, got, want)
		}
	}
}
