package proxy

import (
	"bytes"
	"io"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/chatguard/chatguard/internal/config"
)

// FuzzReadBodyFields: whatever the body, reading it for a key puts back
// exactly the bytes the client sent, and a field that comes out is one the
// body names once: a form field named twice (an array to qs) is never a key.
func FuzzReadBodyFields(f *testing.F) {
	for _, seed := range []struct{ body, ctype string }{
		{"email=ana%40x.com&password=p", "application/x-www-form-urlencoded"},
		{"email=ana%40x.com&x=%zz", "application/x-www-form-urlencoded"},
		{"email=a&email=%zz", "application/x-www-form-urlencoded"},
		{"email[]=a&email=b", "application/x-www-form-urlencoded"},
		{`{"email":"ana@x.com","x":1e400}`, "application/json"},
		{`{"email":"a"} {"email":"b"}`, "application/json"},
		{"\xef\xbb\xbf{\"email\":\"a\"}", "application/json; charset=utf-8"},
	} {
		f.Add(seed.body, seed.ctype)
	}
	s := &Server{cfg: config.Defaults()}
	f.Fuzz(func(t *testing.T, body, ctype string) {
		r := httptest.NewRequest("POST", "/api/auth/login", strings.NewReader(body))
		r.Header.Set("Content-Type", ctype)
		fields := s.readBodyFields(r)
		back, err := io.ReadAll(r.Body)
		if err != nil || !bytes.Equal(back, []byte(body)) {
			t.Fatalf("replayed %q, %v; want the %d bytes sent", back, err, len(body))
		}
		if !strings.Contains(ctype, "x-www-form-urlencoded") {
			return
		}
		for k := range fields {
			n := 0
			for _, rk := range rawFormKeys(body) {
				if rk == k || strings.HasPrefix(rk, k+"[") {
					n++
				}
			}
			if n != 1 {
				t.Fatalf("%q: field %q is a key, but the body names it %d times", body, k, n)
			}
		}
	})
}
