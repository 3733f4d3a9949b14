package main

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// The watcher applies a change once the file has stayed the same for one
// check, so a file written in steps is read whole, not half-way (QA: half a
// file was applied, its other routes gone until the rest landed); a file
// that disappears is said once, and one that comes back is read.
func TestWatchFileWaitsForTheFileToSettle(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "c.yaml")
	if err := os.WriteFile(path, []byte("a: 1\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	var changes, gones atomic.Int32
	const every = 200 * time.Millisecond // far above the writer's steps, however slow the machine
	stop := watchFile(context.Background(), path, every, func() { changes.Add(1) }, func() { gones.Add(1) })
	defer stop()

	// Written in steps, each within a check of the last: no reload until
	// the writing stops, then one.
	f, err := os.OpenFile(path, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 40; i++ {
		if _, err := f.WriteString(strings.Repeat("b", i+1) + ": 2\n"); err != nil {
			t.Fatal(err)
		}
		time.Sleep(every / 20)
		if n := changes.Load(); n != 0 {
			t.Fatalf("reloaded %d times while the file was being written", n)
		}
	}
	f.Close()
	waitUntil(t, "one reload after the writing stopped", func() bool { return changes.Load() == 1 })
	time.Sleep(3 * every)
	if n := changes.Load(); n != 1 {
		t.Fatalf("%d reloads for one settled change", n)
	}

	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, "the file said gone", func() bool { return gones.Load() == 1 })
	time.Sleep(3 * every)
	if n, c := gones.Load(), changes.Load(); n != 1 || c != 1 {
		t.Fatalf("a missing file: gone said %d times, %d reloads", n, c)
	}
	if err := os.WriteFile(path, []byte("a: 3\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, "a reload of the file back", func() bool { return changes.Load() == 2 })

	// Replaced by rename with the same size and modification time (cp -p,
	// tar): another file, read (review: only size and time were compared).
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	next := path + ".new"
	if err := os.WriteFile(next, []byte("a: 4\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Chtimes(next, fi.ModTime(), fi.ModTime()); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(next, path); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, "a reload of the file renamed in place", func() bool { return changes.Load() == 3 })
}

func waitUntil(t *testing.T, what string, ok func() bool) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); !ok(); time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
	}
}
