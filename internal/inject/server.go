package inject

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log"
	"net"
	"net/http"
	"strings"
	"time"
)

// shutdownGrace is how long ServeTLS waits for reviews in flight; the API
// server gives up on each after the webhook's timeoutSeconds (5) anyway.
const shutdownGrace = 10 * time.Second

// ServeTLS serves the webhook on l over TLS 1.2+ with the key pair in
// certFile and keyFile (reloaded when the files change, as a rotated Secret
// does) until ctx is done; then it stops accepting, waits for the reviews in
// flight and returns nil. It closes l.
func (wh *Webhook) ServeTLS(ctx context.Context, l net.Listener, certFile, keyFile string) error {
	kp, err := newKeyPair(certFile, keyFile)
	if err != nil {
		l.Close()
		return err
	}
	srv := &http.Server{
		Handler:           wh,
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       10 * time.Second,
		WriteTimeout:      10 * time.Second,
		IdleTimeout:       90 * time.Second,
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          log.New(logWriter{wh}, "", 0),
	}
	tl := tls.NewListener(l, &tls.Config{MinVersion: tls.VersionTLS12, GetCertificate: kp.get})
	served := make(chan error, 1)
	go func() { served <- srv.Serve(tl) }()
	select {
	case err := <-served:
		return fmt.Errorf("inject: serving: %w", err)
	case <-ctx.Done():
	}
	if wh.DrainDelay > 0 {
		// Still serving while the endpoint leaves the Service: the API
		// server keeps sending reviews here until it does, and with
		// failurePolicy Ignore a refused one admits the pod without chatguard.
		wh.log.WithField("drainDelay", wh.DrainDelay.String()).Info("stopping: still serving during the drain delay")
		select {
		case err := <-served:
			return fmt.Errorf("inject: serving: %w", err)
		case <-time.After(wh.DrainDelay):
		}
	}
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), shutdownGrace)
	defer cancel()
	err = srv.Shutdown(sctx)
	if serr := <-served; !errors.Is(serr, http.ErrServerClosed) && err == nil {
		err = serr
	}
	if err != nil {
		return fmt.Errorf("inject: shutting down: %w", err)
	}
	return nil
}

// logWriter sends the HTTP server's own messages (TLS handshake failures,
// mostly) to the webhook's log at debug level.
type logWriter struct{ wh *Webhook }

func (w logWriter) Write(p []byte) (int, error) {
	w.wh.log.WithField("component", "http").Debug(strings.TrimSpace(string(p)))
	return len(p), nil
}
