// Command client is the load generator of the WebSocket relay benchmark
// (bench/ws/run.sh). It is a process of its own so that its memory is never
// counted as the proxy's. One run opens -clients WebSockets to -url and does
// one of:
//
//	-mode idle      wait for SIGUSR1 (so that the caller can read the
//	                process's memory before), connect every client, print
//	                "connected n=… failed=… seconds=…", then hold the
//	                connections (answering Engine.IO pings) until SIGTERM.
//	-mode pingpong  every client sends a -size byte message and waits for its
//	                answer, again and again, for -duration.
//	-mode paced     every client sends -rate messages a second (at a random
//	                phase, so that the clients do not send in bursts) and
//	                times each answer, for -duration.
//
// In both, what is sent during the first -skip of -duration is not counted.
//
// pingpong and paced print one line of results:
// "result msgs=… seconds=… rate=… p50_us=… p99_us=… p999_us=… max_us=… errors=… late=…",
// and with -samples every round trip to a file.
//
// -kind ws talks to an echo server (each message comes back as it went);
// -kind sio talks Socket.IO over Engine.IO v4's WebSocket transport: open
// packet, CONNECT `40`, then events `42<id>["send-message",{…}]` answered by
// the ack `43<id>[…]`; pings `2` are answered `3` whenever they come.
//
// With -spread (the default) client i connects from its own loopback
// address, 127.1.x.y, the way real clients come from many addresses (per-IP
// state and limits see one client per address).
//
// SIGUSR2 runs a garbage collection and returns free memory to the OS.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"runtime/debug"
	"syscall"
	"time"
)

type options struct {
	url         string
	kind        string
	mode        string
	clients     int
	concurrency int
	duration    time.Duration
	size        int
	rate        float64
	spread      bool
	event       string
	samples     string
	skip        time.Duration
}

func main() {
	var o options
	flag.StringVar(&o.url, "url", "", "base URL of the server, ws://host:port (required)")
	flag.StringVar(&o.kind, "kind", "ws", "ws (echo on /ws/echo) or sio (Socket.IO on /socket.io/)")
	flag.StringVar(&o.mode, "mode", "pingpong", "idle, pingpong or paced")
	flag.IntVar(&o.clients, "clients", 16, "WebSockets to open")
	flag.IntVar(&o.concurrency, "connect-concurrency", 64, "handshakes in flight at once")
	flag.DurationVar(&o.duration, "duration", 5*time.Second, "length of a pingpong or paced run")
	flag.IntVar(&o.size, "size", 256, "bytes of each message (the WebSocket payload)")
	flag.Float64Var(&o.rate, "rate", 100, "paced: messages per second per client")
	flag.BoolVar(&o.spread, "spread", true, "connect each client from its own 127.1.x.y address")
	flag.StringVar(&o.event, "event", "send-message", "sio: the event name sent")
	flag.DurationVar(&o.skip, "skip", 500*time.Millisecond, "pingpong, paced: the first part of -duration, not counted (connections warm up: stacks grow, buffers are allocated)")
	flag.StringVar(&o.samples, "samples", "", "pingpong, paced: also write every round trip to this file, in microseconds, one a line")
	flag.Parse()
	if err := run(o); err != nil {
		fmt.Fprintf(os.Stderr, "client: %v\n", err)
		os.Exit(1)
	}
}

func run(o options) error {
	switch {
	case o.url == "":
		return errors.New("-url is required")
	case o.kind != "ws" && o.kind != "sio":
		return fmt.Errorf("-kind %q: want ws or sio", o.kind)
	case o.clients < 1:
		return errors.New("-clients must be at least 1")
	case o.concurrency < 1:
		return errors.New("-connect-concurrency must be at least 1")
	case o.size < 64:
		return errors.New("-size must be at least 64")
	case o.skip < 0 || o.skip >= o.duration && o.mode != "idle":
		return errors.New("-skip must be at least 0 and shorter than -duration")
	case o.spread && o.clients > maxSpread:
		return fmt.Errorf("-spread has %d addresses; use fewer clients or -spread=false", maxSpread)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	usr2 := make(chan os.Signal, 1)
	signal.Notify(usr2, syscall.SIGUSR2)
	defer signal.Stop(usr2)
	go func() {
		for range usr2 {
			debug.FreeOSMemory()
		}
	}()

	switch o.mode {
	case "idle":
		return idle(ctx, o)
	case "pingpong", "paced":
		return load(ctx, o)
	}
	return fmt.Errorf("-mode %q: want idle, pingpong or paced", o.mode)
}
