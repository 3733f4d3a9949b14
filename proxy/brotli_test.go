package proxy

import (
	"bytes"
	"runtime"
	"testing"

	"github.com/andybalholm/brotli"
)

func brotliBody(t *testing.T, lgwin int, body []byte) []byte {
	t.Helper()
	var buf bytes.Buffer
	w := brotli.NewWriterOptions(&buf, brotli.WriterOptions{Quality: 5, LGWin: lgwin})
	if _, err := w.Write(body); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// The window read from a stream's first byte is the one it was written with.
func TestBrotliWindowBits(t *testing.T) {
	t.Parallel()
	for lgwin := 10; lgwin <= 24; lgwin++ {
		if got := brotliWindowBits(brotliBody(t, lgwin, []byte(`{"error":"x"}`))); got != lgwin {
			t.Errorf("LGWin %d read as %d", lgwin, got)
		}
	}
	if got := brotliWindowBits(nil); got != 0 {
		t.Errorf("empty: %d", got)
	}
}

// An upstream's brotli error body is decoded with a window of at most
// 4 MiB (Node's default), by at most two decoders at once; a larger
// window (a 66-byte stream with a 16 MiB window made the decoder allocate
// 4.3 MB) or a busy moment gets the body wrapped without details.
func TestBrotliDecodingIsBounded(t *testing.T) {
	body := bytes.Repeat([]byte(`{"error":"x"}`), 300_000) // 3.9 MB, over any inspection cap
	small := []byte(`{"name":"TokenExpiredError"}`)
	if plain, err := decodeBody(brotliBody(t, 22, small), "br", 64<<10); err != nil || !bytes.Equal(plain, small) {
		t.Fatalf("window 4 MiB: %q, %v", plain, err)
	}
	huge := brotliBody(t, 24, body)
	var m0, m1 runtime.MemStats
	runtime.ReadMemStats(&m0)
	_, err := decodeBody(huge, "br", 64<<10)
	runtime.ReadMemStats(&m1)
	if err == nil {
		t.Fatal("a 16 MiB window was decoded")
	}
	if got := m1.TotalAlloc - m0.TotalAlloc; got > 64<<10 {
		t.Fatalf("refusing a 16 MiB window allocated %d bytes", got)
	}
	for i := 0; i < cap(brotliSlots); i++ {
		brotliSlots <- struct{}{}
	}
	_, busy := decodeBody(brotliBody(t, 16, small), "br", 64<<10)
	for i := 0; i < cap(brotliSlots); i++ {
		<-brotliSlots
	}
	if busy == nil {
		t.Fatal("a third decoder ran while two were busy")
	}
	if plain, err := decodeBody(brotliBody(t, 16, small), "br", 64<<10); err != nil || !bytes.Equal(plain, small) {
		t.Fatalf("after the busy moment: %q, %v", plain, err)
	}
}
