package proxy

import (
	"bytes"
	"compress/gzip"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/chatguard/chatguard/internal/config"
)

// The memory runbook over HTTP (QA: in a pod the image has no shell or
// kill, and the profiles' volume is mounted into chatguard alone): free
// memory as SIGUSR2 does, list the watchdog's profiles, fetch one, and take
// a heap profile now; all behind the stats token, nothing else of the
// directory served.
func TestMemoryRunbookOverHTTP(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	saved := []byte("saved heap profile bytes")
	if err := os.WriteFile(filepath.Join(dir, "heap-20261128T031500Z.pprof"), saved, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "notes.txt"), []byte("not a profile"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(filepath.Dir(dir), "outside.pprof"), []byte("outside"), 0o644); err != nil {
		t.Fatal(err)
	}
	// A link in the directory is neither listed nor served (review: it was served).
	if err := os.Symlink(filepath.Join(filepath.Dir(dir), "outside.pprof"), filepath.Join(dir, "link.pprof")); err != nil {
		t.Fatal(err)
	}
	h := start(t, upstream(t, func(http.ResponseWriter, *http.Request) {}).URL, func(c *config.Config) {
		c.StatsToken = testStatsToken
		c.Memory.ProfileDir = dir
	})
	call := func(method, path string, token bool) (*http.Response, []byte) {
		t.Helper()
		req, _ := http.NewRequest(method, h.admin+path, nil)
		if token {
			req.Header.Set("Authorization", "Bearer "+testStatsToken)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp, b
	}
	for _, c := range []struct{ method, path string }{
		{http.MethodPost, MemoryFreePath}, {http.MethodGet, ProfilesPath}, {http.MethodGet, ProfilesPath + "/heap"},
	} {
		if resp, b := call(c.method, c.path, false); resp.StatusCode != 401 {
			t.Errorf("%s %s without the token: %d %s", c.method, c.path, resp.StatusCode, b)
		}
	}
	if resp, b := call(http.MethodGet, MemoryFreePath, true); resp.StatusCode != 405 {
		t.Errorf("GET %s: %d %s", MemoryFreePath, resp.StatusCode, b)
	}

	resp, b := call(http.MethodPost, MemoryFreePath, true)
	var freed struct {
		Data struct{ Before, After map[string]any } `json:"data"`
	}
	if err := json.Unmarshal(b, &freed); resp.StatusCode != 200 || err != nil || len(freed.Data.Before) == 0 || len(freed.Data.After) == 0 {
		t.Errorf("free: %d %s", resp.StatusCode, b)
	}
	waitFor(t, "the free-memory log line", func() bool {
		return strings.Contains(h.logs.String(), "returned free memory to the OS (admin request)")
	})

	resp, b = call(http.MethodGet, ProfilesPath, true)
	var list struct {
		Data struct {
			Profiles []struct {
				Name  string `json:"name"`
				Bytes int64  `json:"bytes"`
			} `json:"profiles"`
		} `json:"data"`
	}
	if err := json.Unmarshal(b, &list); resp.StatusCode != 200 || err != nil || len(list.Data.Profiles) != 1 ||
		list.Data.Profiles[0].Name != "heap-20261128T031500Z.pprof" || list.Data.Profiles[0].Bytes != int64(len(saved)) {
		t.Errorf("list: %d %s", resp.StatusCode, b)
	}
	if resp, b := call(http.MethodGet, ProfilesPath+"/heap-20261128T031500Z.pprof", true); resp.StatusCode != 200 || !bytes.Equal(b, saved) {
		t.Errorf("fetch: %d %q", resp.StatusCode, b)
	}
	for _, name := range []string{"notes.txt", "link.pprof", "..%2Foutside.pprof", "../outside.pprof", "missing.pprof", "%2e%2e/outside.pprof"} {
		if resp, b := call(http.MethodGet, ProfilesPath+"/"+name, true); resp.StatusCode != 404 || bytes.Contains(b, []byte("outside")) {
			t.Errorf("%s: %d %s", name, resp.StatusCode, b)
		}
	}
	// Taken now: a gzipped pprof profile.
	resp, b = call(http.MethodGet, ProfilesPath+"/heap", true)
	if zr, err := gzip.NewReader(bytes.NewReader(b)); resp.StatusCode != 200 || err != nil {
		t.Errorf("heap now: %d %v", resp.StatusCode, err)
	} else {
		zr.Close()
	}
}
