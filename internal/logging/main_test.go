package logging_test

import (
	"bufio"
	"bytes"
	"encoding/json"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/chatguard/chatguard/internal/logging"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// syncBuffer is an io.Writer that the summary goroutine and the test can share.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// lines decodes every line of s as a JSON object.
func lines(t *testing.T, s string) []map[string]any {
	t.Helper()
	var out []map[string]any
	sc := bufio.NewScanner(strings.NewReader(s))
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		var m map[string]any
		if err := json.Unmarshal(sc.Bytes(), &m); err != nil {
			t.Fatalf("line is not JSON: %v\n%s", err, sc.Text())
		}
		out = append(out, m)
	}
	return out
}

// newLogger builds a logger writing to a fresh buffer and closes it at cleanup.
func newLogger(t *testing.T, o logging.Options) (*logging.Logger, *syncBuffer) {
	t.Helper()
	buf := &syncBuffer{}
	if o.Out == nil {
		o.Out = buf
	}
	lg, err := logging.New(o)
	if err != nil {
		t.Fatalf("New(%+v) error = %v", o, err)
	}
	t.Cleanup(func() {
		if err := lg.Close(); err != nil {
			t.Errorf("Close() error = %v", err)
		}
	})
	return lg, buf
}

// eventually polls cond until it holds or a generous deadline passes; it
// asserts an outcome, never a duration.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}
