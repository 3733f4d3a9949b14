package identity

import (
	"errors"
	"net/http/httptest"
	"testing"

	"github.com/golang-jwt/jwt/v5"
)

// Verify gives the user key: an e-mail in any case is one user, a sub keeps
// its case; tokens of one e-mail in two cases are not two users.
func TestVerifyUserKeyEmailCase(t *testing.T) {
	t.Parallel()
	v, err := New(Options{Secret: secret, Now: clock})
	if err != nil {
		t.Fatal(err)
	}
	upper := sign(t, jwt.SigningMethodHS256, secret, claims(map[string]any{"email": "Bob@Example.com"}))
	lower := sign(t, jwt.SigningMethodHS256, secret, claims(map[string]any{"email": "bob@example.com"}))
	if id, err := v.Verify(upper); err != nil || id.User != "bob@example.com" {
		t.Fatalf("Verify(Bob@Example.com) = %q %v, want bob@example.com", id.User, err)
	}
	subUpper := sign(t, jwt.SigningMethodHS256, secret, claims(map[string]any{"email": nil, "sub": "Carol"}))
	subLower := sign(t, jwt.SigningMethodHS256, secret, claims(map[string]any{"email": nil, "sub": "carol"}))
	if id, err := v.Verify(subUpper); err != nil || id.User != "Carol" {
		t.Fatalf("Verify(sub Carol) = %q %v, want Carol", id.User, err)
	}

	r := httptest.NewRequest("GET", "/socket.io/?EIO=4&token="+lower, nil)
	r.Header.Set("Authorization", "Bearer "+upper)
	if id, err := v.VerifyRequest(r, ""); err != nil || id.User != "bob@example.com" {
		t.Errorf("one e-mail in two cases: %q %v, want bob@example.com", id.User, err)
	}
	r = httptest.NewRequest("GET", "/socket.io/?EIO=4&token="+subLower, nil)
	r.Header.Set("Authorization", "Bearer "+subUpper)
	if _, err := v.VerifyRequest(r, ""); !errors.Is(err, ErrConflict) {
		t.Errorf("subs Carol and carol: %v, want ErrConflict", err)
	}
}
