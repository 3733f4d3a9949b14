package logging_test

import (
	"strings"
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
