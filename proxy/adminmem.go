package proxy

import (
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"runtime/pprof"
	"sort"
	"strings"
	"time"

	"github.com/sirupsen/logrus"

	apierrors "github.com/chatguard/chatguard/errors"
	"github.com/chatguard/chatguard/internal/logging"
	"github.com/chatguard/chatguard/internal/memstats"
)

// The memory runbook's steps over HTTP, for a pod: the image has no shell
// or kill, and the profiles sit in a volume only chatguard mounts.
const (
	// MemoryFreePath: POST returns free memory to the OS, as SIGUSR2 does.
	MemoryFreePath = "/api/internal/memory/free"
	// ProfilesPath lists the profiles in memory.profile_dir; ProfilesPath
	// + "/{name}" is one of them, and ProfilesPath + "/heap" a heap
	// profile taken now.
	ProfilesPath = "/api/internal/profiles"
)

// serveMemoryFree answers POST MemoryFreePath.
func (s *Server) serveMemoryFree(w http.ResponseWriter, r *http.Request, info *reqInfo) {
	if !s.allowAuthorized(w, r, info, http.MethodPost) {
		return
	}
	before, after := memstats.FreeOSMemory()
	s.log.WithFields(logrus.Fields{
		"requestId": info.id, logging.FieldCategory: logging.CategoryPerformance, "before": before, "after": after,
	}).Info("returned free memory to the OS (admin request)")
	writeJSON(w, r, http.StatusOK, map[string]any{"success": true, "data": map[string]any{"before": before, "after": after}})
}

// profileName is a file the watchdog writes (heap-….pprof, cpu-….pprof):
// nothing else of the directory is served.
var profileName = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]*\.pprof$`)

// serveProfiles answers GET ProfilesPath[/name].
func (s *Server) serveProfiles(w http.ResponseWriter, r *http.Request, info *reqInfo, name string) {
	if !s.allowAuthorized(w, r, info, http.MethodGet, http.MethodHead) {
		return
	}
	dir := s.cfg.Memory.ProfileDir
	switch {
	case name == "":
		type profile struct {
			Name    string    `json:"name"`
			Bytes   int64     `json:"bytes"`
			Written time.Time `json:"written"`
		}
		list := []profile{}
		if entries, err := os.ReadDir(dir); err == nil && dir != "" {
			for _, e := range entries {
				if fi, err := e.Info(); err == nil && fi.Mode().IsRegular() && profileName.MatchString(e.Name()) {
					list = append(list, profile{e.Name(), fi.Size(), fi.ModTime().UTC()})
				}
			}
		}
		sort.Slice(list, func(i, j int) bool { return list[i].Written.After(list[j].Written) })
		writeJSON(w, r, http.StatusOK, map[string]any{"success": true, "data": map[string]any{"profiles": list}})
	case name == "heap":
		w.Header().Set("Content-Type", "application/octet-stream")
		w.Header().Set("Content-Disposition", `attachment; filename="heap-now.pprof"`)
		_ = pprof.Lookup("heap").WriteTo(w, 0)
	case dir != "" && profileName.MatchString(name) && !strings.Contains(name, ".."):
		// Only what the listing shows: a regular file, not a link to
		// something else (review: evil.pprof -> a secret was served).
		if fi, err := os.Lstat(filepath.Join(dir, name)); err != nil || !fi.Mode().IsRegular() {
			s.writeError(w, r, info, apierrors.New(apierrors.CodeNotFound, "no such profile"), sourceProxy)
			return
		}
		f, err := os.OpenInRoot(dir, name)
		if err != nil {
			s.writeError(w, r, info, apierrors.New(apierrors.CodeNotFound, "no such profile"), sourceProxy)
			return
		}
		defer f.Close()
		fi, err := f.Stat()
		if err != nil || !fi.Mode().IsRegular() {
			s.writeError(w, r, info, apierrors.New(apierrors.CodeNotFound, "no such profile"), sourceProxy)
			return
		}
		w.Header().Set("Content-Type", "application/octet-stream")
		w.Header().Set("Content-Disposition", `attachment; filename="`+name+`"`)
		http.ServeContent(w, r, name, fi.ModTime(), f)
	default:
		s.writeError(w, r, info, apierrors.New(apierrors.CodeNotFound, "no such profile"), sourceProxy)
	}
}
