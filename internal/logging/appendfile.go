package logging

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"
)

// OpenAppend opens path for appending, creating it (mode 0640: client
// addresses and user ids are in it) and its missing directories: how the
// log files and the alert file are opened.
func OpenAppend(path string) (*os.File, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return nil, err
	}
	return os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o640)
}

// CheckAppend returns the error OpenAppend would meet on path, in the words
// it would use ("mkdir logs: permission denied"), creating nothing: the
// nearest directory that exists must be one that this user can write, an
// existing file must be writable, and no part of the path may be a file.
// check-config runs it where serve would open the files at start.
func CheckAppend(path string) error {
	path = filepath.Clean(path)
	st, err := os.Stat(path)
	switch {
	case err == nil && st.IsDir():
		return &fs.PathError{Op: "open", Path: path, Err: syscall.EISDIR}
	case err == nil:
		return pathErr("open", path, access(path, wOK))
	case !errors.Is(err, fs.ErrNotExist) && !errors.Is(err, syscall.ENOTDIR):
		return pathErr("open", path, err)
	}
	// The file is to be created: find the nearest directory that exists.
	missing := path // the topmost missing part so far: what MkdirAll makes first
	for dir := filepath.Dir(path); ; dir = filepath.Dir(dir) {
		st, err := os.Stat(dir)
		switch {
		case err == nil && !st.IsDir():
			return &fs.PathError{Op: "mkdir", Path: dir, Err: syscall.ENOTDIR}
		case err == nil:
			op := "mkdir"
			if missing == path {
				op = "open"
			}
			return pathErr(op, missing, access(dir, wOK|xOK))
		case !errors.Is(err, fs.ErrNotExist) && !errors.Is(err, syscall.ENOTDIR):
			return pathErr("mkdir", dir, err)
		}
		if parent := filepath.Dir(dir); parent == dir {
			return pathErr("mkdir", dir, err) // not even the root exists
		}
		missing = dir
	}
}

// pathErr is err as OpenAppend's calls would name it, or nil.
func pathErr(op, path string, err error) error {
	if err == nil {
		return nil
	}
	var pe *fs.PathError
	if errors.As(err, &pe) {
		err = pe.Err
	}
	return &fs.PathError{Op: op, Path: path, Err: err}
}

// CheckFiles returns the error New would stop at for file logging in dir
// (its combined.log, then errors.log), creating nothing (see CheckAppend).
func CheckFiles(dir string) error {
	for _, name := range fileNames {
		if err := CheckAppend(filepath.Join(dir, name)); err != nil {
			return dirError(dir, err)
		}
	}
	return nil
}

// fileNames are the log files in log.dir: every line, error lines.
var fileNames = [2]string{"combined.log", "errors.log"}

// dirError is a failure to open the log files as New and CheckFiles say it.
func dirError(dir string, err error) error {
	return fmt.Errorf("file logging (log.dir %q): %w", dir, err)
}
