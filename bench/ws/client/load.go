package main

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"slices"
	"strconv"
	"sync"
	"time"
)

// clientResult is what one client measured.
type clientResult struct {
	rtts   []time.Duration
	errors int // answers that did not match, failed writes or reads
	late   int // paced: sends more than one interval behind schedule
}

// load runs -mode pingpong or paced: connect everyone first (not timed),
// then all clients start together and run for o.duration.
func load(ctx context.Context, o options) error {
	conns, failed, err := connectAll(ctx, o)
	defer func() {
		for _, cn := range conns {
			_ = cn.c.CloseNow()
		}
	}()
	if failed > 0 {
		return fmt.Errorf("%d of %d clients failed to connect; first: %w", failed, o.clients, err)
	}
	for _, cn := range conns {
		cn.buf = new(bytes.Buffer)
	}

	// A server that stops answering must not hold the run: past the
	// deadline (and a grace period) every connection is dropped.
	watchdog := time.AfterFunc(o.duration+10*time.Second, func() {
		for _, cn := range conns {
			_ = cn.c.CloseNow()
		}
	})
	defer watchdog.Stop()

	results := make([]clientResult, len(conns))
	startCh := make(chan struct{})
	var wg sync.WaitGroup
	for i, cn := range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-startCh
			if o.mode == "paced" {
				results[i] = paced(ctx, cn, o, i)
			} else {
				results[i] = pingpong(ctx, cn, o)
			}
		}()
	}
	t0 := time.Now()
	close(startCh)
	wg.Wait()
	elapsed := time.Since(t0) - o.skip // what is counted is sent after t0+skip

	var all []time.Duration
	errs, late := 0, 0
	for _, r := range results {
		all = append(all, r.rtts...)
		errs += r.errors
		late += r.late
	}
	slices.Sort(all)
	if o.samples != "" {
		if err := writeSamples(o.samples, all); err != nil {
			return err
		}
	}
	us := func(q float64) float64 { return float64(percentile(all, q)) / 1e3 }
	fmt.Printf("result msgs=%d seconds=%.3f rate=%.1f p50_us=%.1f p99_us=%.1f p999_us=%.1f max_us=%.1f errors=%d late=%d\n",
		len(all), elapsed.Seconds(), float64(len(all))/elapsed.Seconds(), us(0.50), us(0.99), us(0.999), us(1), errs, late)
	return nil
}

// writeSamples writes the round trips in microseconds, one a line.
func writeSamples(name string, rtts []time.Duration) error {
	f, err := os.Create(name)
	if err != nil {
		return fmt.Errorf("samples: %w", err)
	}
	w := bufio.NewWriter(f)
	for _, d := range rtts {
		w.WriteString(strconv.FormatFloat(float64(d)/1e3, 'f', 1, 64))
		w.WriteByte('\n')
	}
	if err := w.Flush(); err != nil {
		f.Close()
		return fmt.Errorf("samples: %w", err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("samples: %w", err)
	}
	return nil
}

// percentile of sorted samples (nearest rank); 0 when there are none.
func percentile(sorted []time.Duration, q float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	i := int(q*float64(len(sorted))+0.999999) - 1
	return sorted[min(max(i, 0), len(sorted)-1)]
}

// exchange sends one message and waits for its answer; the round trip is
// timed from just before the write.
func exchange(ctx context.Context, cn *conn, o options, seq uint64) (time.Duration, error) {
	msg, want := request(o, seq)
	t := time.Now()
	if err := cn.write(ctx, msg); err != nil {
		return 0, err
	}
	for {
		got, err := cn.read(ctx)
		if err != nil {
			return 0, err
		}
		if matches(o, msg, want, got) {
			return time.Since(t), nil
		}
		if o.kind == "ws" {
			return 0, fmt.Errorf("the echo differs: %.40q", got)
		}
		// sio: something else the server said (an error event, say): not
		// the answer; keep waiting for it.
	}
}

func pingpong(ctx context.Context, cn *conn, o options) clientResult {
	var r clientResult
	r.rtts = make([]time.Duration, 0, 4096)
	start := time.Now()
	counted, deadline := start.Add(o.skip), start.Add(o.duration)
	for seq := uint64(1); ; seq++ {
		t := time.Now()
		if !t.Before(deadline) {
			return r
		}
		d, err := exchange(ctx, cn, o, seq)
		if err != nil {
			r.errors++
			return r
		}
		if !t.Before(counted) {
			r.rtts = append(r.rtts, d)
		}
	}
}

// paced sends o.rate messages a second on a fixed schedule that starts at a
// random phase; a send that is late goes at once (the schedule is kept, so
// the rate is too), and counts as late when it is more than one interval
// behind.
func paced(ctx context.Context, cn *conn, o options, i int) clientResult {
	var r clientResult
	interval := time.Duration(float64(time.Second) / o.rate)
	rng := rand.New(rand.NewPCG(uint64(i)+1, uint64(time.Now().UnixNano())))
	start := time.Now()
	counted, deadline := start.Add(o.skip), start.Add(o.duration)
	next := start.Add(time.Duration(rng.Int64N(int64(interval))))
	r.rtts = make([]time.Duration, 0, int(o.rate*o.duration.Seconds())+1)
	for seq := uint64(1); next.Before(deadline); seq++ {
		if d := time.Until(next); d > 0 {
			time.Sleep(d)
		} else if -d > interval && !next.Before(counted) {
			r.late++
		}
		d, err := exchange(ctx, cn, o, seq)
		if err != nil {
			r.errors++
			return r
		}
		if !next.Before(counted) {
			r.rtts = append(r.rtts, d)
		}
		next = next.Add(interval)
	}
	return r
}
