package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// idle connects every client when SIGUSR1 comes, says so on stdout, and
// holds the connections until ctx ends (SIGTERM). Each client's goroutine
// only reads, answering Engine.IO pings.
func idle(ctx context.Context, o options) error {
	usr1 := make(chan os.Signal, 1)
	signal.Notify(usr1, syscall.SIGUSR1)
	defer signal.Stop(usr1)
	fmt.Println("waiting")
	select {
	case <-usr1:
	case <-ctx.Done():
		return nil
	}

	start := time.Now()
	conns, failed, err := connectAll(ctx, o)
	took := time.Since(start)
	msg := ""
	if err != nil {
		msg = err.Error()
	}
	fmt.Printf("connected n=%d failed=%d seconds=%.3f first_error=%q\n", len(conns), failed, took.Seconds(), msg)

	var dropped atomic.Int64
	var wg sync.WaitGroup
	for _, cn := range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				if _, err := cn.read(context.Background()); err != nil {
					if ctx.Err() == nil {
						dropped.Add(1)
					}
					return
				}
			}
		}()
	}
	<-ctx.Done()
	for _, cn := range conns {
		_ = cn.c.CloseNow()
	}
	wg.Wait()
	if n := dropped.Load(); n > 0 {
		fmt.Fprintf(os.Stderr, "client: %d connection(s) dropped while idle\n", n)
	}
	return nil
}
