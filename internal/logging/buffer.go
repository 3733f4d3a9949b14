package logging

import (
	"bufio"
	"io"
	"sync"
	"time"
)

// bufferedWriter batches log lines into one write per flush interval (or
// per 64 KiB), as nginx's access_log buffer= does, instead of one write
// system call per line. Its flusher goroutine stops on Close, which flushes.
type bufferedWriter struct {
	mu   sync.Mutex
	w    *bufio.Writer
	stop chan struct{}
	done chan struct{}
}

func newBufferedWriter(out io.Writer, every time.Duration) *bufferedWriter {
	b := &bufferedWriter{w: bufio.NewWriterSize(out, 64<<10), stop: make(chan struct{}), done: make(chan struct{})}
	go b.flushLoop(every)
	return b
}

// Write takes one whole line (logrus writes an entry at a time). A line
// that does not fit what is left of the buffer flushes the buffer first, so
// that no line is split between two writes, where another writer to the
// same file (stderr sent to the same place) could land in its middle.
func (b *bufferedWriter) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if len(p) > b.w.Available() && b.w.Buffered() > 0 {
		if err := b.w.Flush(); err != nil {
			return 0, err
		}
	}
	return b.w.Write(p)
}

// Flush writes out what is buffered.
func (b *bufferedWriter) Flush() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.w.Flush()
}

func (b *bufferedWriter) flushLoop(every time.Duration) {
	defer close(b.done)
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-b.stop:
			return
		case <-t.C:
			_ = b.Flush()
		}
	}
}

// Close stops the flusher and flushes. Call it once.
func (b *bufferedWriter) Close() error {
	close(b.stop)
	<-b.done
	return b.Flush()
}
