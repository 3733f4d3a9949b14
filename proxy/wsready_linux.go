package proxy

import (
	"os"
	"sync"
	"syscall"
)

// readyPoller tells when idle sockets become readable, without a goroutine
// (and its stack) per socket: an epoll instance of chatguard's own, itself
// waited on through Go's network poller, so that no thread blocks in
// epoll_wait. Each watched socket is armed for one event at a time
// (EPOLLONESHOT): the relay reads until the library's buffer is empty, then
// arms it again.
type readyPoller struct {
	epfd int      // for run's epoll_wait; elsewhere, under raw.Control
	file *os.File // epfd in Go's poller
	raw  syscall.RawConn

	mu      sync.Mutex
	next    uint64
	watches map[uint64]func() // id → what to run when that socket is readable
}

const readyEvents = syscall.EPOLLIN | syscall.EPOLLRDHUP | syscall.EPOLLONESHOT

func newReadyPoller() (*readyPoller, error) {
	fd, err := syscall.EpollCreate1(syscall.EPOLL_CLOEXEC)
	if err != nil {
		return nil, os.NewSyscallError("epoll_create1", err)
	}
	if err := syscall.SetNonblock(fd, true); err != nil {
		_ = syscall.Close(fd)
		return nil, os.NewSyscallError("setnonblock", err)
	}
	f := os.NewFile(uintptr(fd), "chatguard-epoll")
	raw, err := f.SyscallConn()
	if err != nil {
		_ = f.Close()
		return nil, err
	}
	return &readyPoller{epfd: fd, file: f, raw: raw, watches: map[uint64]func(){}}, nil
}

// run dispatches readiness until close; each ready socket's function runs
// on the dispatching goroutine and must not block (it starts the reader).
func (rp *readyPoller) run() {
	events := make([]syscall.EpollEvent, 128)
	for {
		var n int
		err := rp.raw.Read(func(uintptr) bool {
			var errno error
			for {
				n, errno = syscall.EpollWait(rp.epfd, events, 0)
				if errno != syscall.EINTR {
					break
				}
			}
			if errno != nil {
				n = 0 // cannot happen on an open epoll fd; wait rather than spin
			}
			return n > 0 // nothing ready: wait until Go's poller says the epoll fd is readable
		})
		if err != nil { // closed
			return
		}
		for _, ev := range events[:n] {
			id := uint64(uint32(ev.Fd)) | uint64(uint32(ev.Pad))<<32
			rp.mu.Lock()
			fn := rp.watches[id]
			rp.mu.Unlock()
			if fn != nil {
				fn()
			}
		}
	}
}

// add puts raw's socket in the poller's set, not armed, with fn to run
// when it is armed and readable, and returns the watch's id. It fails when
// the socket, or the poller, is closed.
func (rp *readyPoller) add(raw syscall.RawConn, fn func()) (uint64, error) {
	rp.mu.Lock()
	rp.next++
	id := rp.next
	rp.watches[id] = fn
	rp.mu.Unlock()
	// One-shot with no event asked for: disarmed. (An error or hang-up may
	// still be reported once: fn runs only for an armed watch.)
	if err := rp.ctl(raw, syscall.EPOLL_CTL_ADD, id, syscall.EPOLLONESHOT); err != nil {
		rp.mu.Lock()
		delete(rp.watches, id)
		rp.mu.Unlock()
		return 0, err
	}
	return id, nil
}

// arm asks for one event when raw's socket is readable (at once if it is
// already). It fails when the socket, or the poller, is closed.
func (rp *readyPoller) arm(raw syscall.RawConn, id uint64) error {
	return rp.ctl(raw, syscall.EPOLL_CTL_MOD, id, readyEvents)
}

func (rp *readyPoller) ctl(raw syscall.RawConn, op int, id uint64, events uint32) error {
	ev := syscall.EpollEvent{Events: events, Fd: int32(uint32(id)), Pad: int32(uint32(id >> 32))}
	var errno error
	// Both Controls hold their descriptor open while they run: a socket,
	// or the poller, closed meanwhile cannot have its number reused.
	err := rp.raw.Control(func(epfd uintptr) {
		if err := raw.Control(func(fd uintptr) { errno = syscall.EpollCtl(int(epfd), op, int(fd), &ev) }); err != nil {
			errno = err
		}
	})
	if err != nil {
		return err
	}
	if errno != nil {
		return os.NewSyscallError("epoll_ctl", errno)
	}
	return nil
}

// remove forgets id; the socket itself leaves the epoll set when it is
// closed (or now, if it is still open).
func (rp *readyPoller) remove(raw syscall.RawConn, id uint64) {
	rp.mu.Lock()
	delete(rp.watches, id)
	rp.mu.Unlock()
	_ = rp.ctl(raw, syscall.EPOLL_CTL_DEL, id, 0)
}

func (rp *readyPoller) len() int {
	rp.mu.Lock()
	defer rp.mu.Unlock()
	return len(rp.watches)
}

// close stops run.
func (rp *readyPoller) close() error {
	return rp.file.Close()
}
