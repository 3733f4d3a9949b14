package logging_test

import (
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chatguard/chatguard/internal/logging"
)

func TestBufferedOutput(t *testing.T) {
	t.Parallel()
	var out syncBuffer
	lg, err := logging.New(logging.Options{Out: &out, FlushInterval: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	lg.Info("first")
	if out.String() != "" {
		t.Fatalf("written before a flush: %q", out.String())
	}
	if err := lg.Flush(); err != nil || !strings.Contains(out.String(), `"msg":"first"`) {
		t.Fatalf("Flush: %v %q", err, out.String())
	}
	lg.Info("second")
	if err := lg.Close(); err != nil || !strings.Contains(out.String(), `"msg":"second"`) {
		t.Fatalf("Close did not flush: %v %q", err, out.String())
	}

	var ticked syncBuffer
	lg2, err := logging.New(logging.Options{Out: &ticked, FlushInterval: time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer lg2.Close()
	lg2.Info("tick")
	deadline := time.Now().Add(5 * time.Second)
	for !strings.Contains(ticked.String(), "tick") {
		if time.Now().After(deadline) {
			t.Fatal("the flusher never wrote")
		}
		time.Sleep(time.Millisecond)
	}
}

// writesRecorder keeps every Write it gets as one piece.
type writesRecorder struct {
	mu     sync.Mutex
	writes []string
}

func (w *writesRecorder) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.writes = append(w.writes, string(p))
	return len(p), nil
}

// Every write the buffer makes ends at a line's end: a line never straddles
// two writes, where another writer to the same file could land in it.
func TestBufferedOutputNeverSplitsALine(t *testing.T) {
	t.Parallel()
	rec := &writesRecorder{}
	lg, err := logging.New(logging.Options{Out: rec, FlushInterval: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 400; i++ {
		lg.WithField("pad", strings.Repeat("a", 100+i*7%900)).Info("line")
	}
	lg.WithField("pad", strings.Repeat("b", 100<<10)).Info("a line larger than the buffer")
	if err := lg.Close(); err != nil {
		t.Fatal(err)
	}
	rec.mu.Lock()
	defer rec.mu.Unlock()
	if len(rec.writes) < 3 {
		t.Fatalf("%d writes: the buffer never filled", len(rec.writes))
	}
	for i, w := range rec.writes {
		if !strings.HasSuffix(w, "}\n") || !strings.HasPrefix(w, `{"`) {
			t.Fatalf("write %d of %d does not hold whole lines: starts %q, ends %q", i, len(rec.writes), w[:min(len(w), 20)], w[max(0, len(w)-20):])
		}
	}
}
