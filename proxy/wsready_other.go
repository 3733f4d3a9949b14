//go:build !linux

package proxy

import (
	"errors"
	"syscall"
)

// readyPoller needs epoll; elsewhere every relayed WebSocket keeps a
// goroutine per direction (see wsDir).
type readyPoller struct{}

func newReadyPoller() (*readyPoller, error) {
	return nil, errors.New("proxy: no readiness poller on this system")
}

func (*readyPoller) run()                                        {}
func (*readyPoller) add(syscall.RawConn, func()) (uint64, error) { return 0, errors.ErrUnsupported }
func (*readyPoller) arm(syscall.RawConn, uint64) error           { return errors.ErrUnsupported }
func (*readyPoller) remove(syscall.RawConn, uint64)              {}
func (*readyPoller) len() int                                    { return 0 }
func (*readyPoller) close() error                                { return nil }
