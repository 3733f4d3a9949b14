package main

import (
	"context"
	"io"
	"os"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/sirupsen/logrus"
)

// A SIGTERM is acted on while a SIGHUP's reload is still running (QA: a
// slow reload held the shutdown back by 23 s), and SIGHUPs that come
// during a reload make one more reload, not one each. Not parallel: it
// signals its own process.
func TestSIGTERMIsNotHeldBackByAReload(t *testing.T) {
	lg := logrus.New()
	lg.SetOutput(io.Discard)
	release := make(chan struct{})
	reloading := make(chan struct{}, 4)
	var reloads atomic.Int32
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	stop := handleSignals(cancel, logrus.NewEntry(lg), func(int) { t.Error("exit called") }, func(string) {
		reloads.Add(1)
		reloading <- struct{}{}
		<-release
	})
	wait := func(ch <-chan struct{}, what string) {
		t.Helper()
		select {
		case <-ch:
		case <-time.After(5 * time.Second):
			t.Fatal(what)
		}
	}
	self := func(sig syscall.Signal) {
		if err := syscall.Kill(os.Getpid(), sig); err != nil {
			t.Fatal(err)
		}
	}
	self(syscall.SIGHUP)
	wait(reloading, "no reload after SIGHUP")
	self(syscall.SIGHUP)
	self(syscall.SIGHUP)
	self(syscall.SIGTERM)
	wait(ctx.Done(), "SIGTERM waited for the reload in progress")
	close(release)
	wait(reloading, "the SIGHUPs sent during the reload made no reload")
	stop()
	if n := reloads.Load(); n != 2 {
		t.Errorf("%d reloads, want 2", n)
	}
}
