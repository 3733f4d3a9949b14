// Package buildinfo reports the version chatguard was built as.
package buildinfo

import (
	"runtime"
	"runtime/debug"
)

// Set at build time with -ldflags "-X github.com/chatguard/chatguard/internal/buildinfo.version=…".
var (
	version   = ""
	revision  = ""
	buildDate = ""
)

// Info describes the running binary.
type Info struct {
	Version   string `json:"version"`
	Revision  string `json:"revision"`
	BuildDate string `json:"buildDate"`
	GoVersion string `json:"goVersion"`
}

// Get returns the build information: the values injected at link time, else
// what the Go toolchain recorded (module version, VCS revision and time).
func Get() Info {
	i := Info{Version: version, Revision: revision, BuildDate: buildDate, GoVersion: runtime.Version()}
	if bi, ok := debug.ReadBuildInfo(); ok {
		if i.Version == "" && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
			i.Version = bi.Main.Version
		}
		for _, s := range bi.Settings {
			switch {
			case s.Key == "vcs.revision" && i.Revision == "":
				i.Revision = s.Value
			case s.Key == "vcs.time" && i.BuildDate == "":
				i.BuildDate = s.Value
			}
		}
	}
	if i.Version == "" {
		i.Version = "dev"
	}
	if i.Revision == "" {
		i.Revision = "unknown"
	}
	if i.BuildDate == "" {
		i.BuildDate = "unknown"
	}
	return i
}
