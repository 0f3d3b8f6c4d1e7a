// Package version says which fedgrid this is: its release, the commit it was
// built from, the Go toolchain and the protocol versions it speaks.
package version

import (
	"runtime"
	"runtime/debug"
)

// Version is the release, set at build time with
// -ldflags "-X github.com/fedgrid/fedgrid/internal/version.Version=..."
// (the Makefile does); unset it is the version of this source tree.
var Version = "0.1.0"

// Commit is the source revision, set at build time like Version. Unset, it
// comes from the VCS information the Go toolchain embeds (vcs.revision).
var Commit = ""

// Dirty is "true" when set at build time for a tree with uncommitted changes.
var Dirty = ""

// Protocol versions this build speaks. A peer refuses nothing by version
// yet; they are reported so that operators can tell mixed versions apart.
const (
	// StreamProtocol is the version suffix of every fedgrid stream protocol
	// (/fedgrid/<network>/<name>/<version>).
	StreamProtocol = "1.0.0"
	// PlanFormat and ModelFormat are the documents a data scientist exchanges.
	PlanFormat  = "fedgrid.plan/v1"
	ModelFormat = "fedgrid.model/v1"
)

// Info is everything `fedgrid version` prints.
type Info struct {
	Version   string    `json:"version"`
	Commit    string    `json:"commit"`
	Modified  bool      `json:"modified,omitempty"` // built from a tree with uncommitted changes
	BuildTime string    `json:"build_time,omitempty"`
	Go        string    `json:"go"`
	Platform  string    `json:"platform"`
	Protocols Protocols `json:"protocols"`
}

// Protocols lists the protocol and format versions.
type Protocols struct {
	Streams string `json:"streams"`
	DHT     string `json:"dht"`
	Plan    string `json:"plan"`
	Model   string `json:"model"`
}

// Get collects Info from the build.
func Get() Info {
	in := Info{
		Version:  Version,
		Commit:   Commit,
		Modified: Dirty == "true",
		Go:       runtime.Version(),
		Platform: runtime.GOOS + "/" + runtime.GOARCH,
		Protocols: Protocols{
			Streams: "/fedgrid/<network>/<name>/" + StreamProtocol,
			DHT:     "/fedgrid/<network>/kad/1.0.0",
			Plan:    PlanFormat,
			Model:   ModelFormat,
		},
	}
	if bi, ok := debug.ReadBuildInfo(); ok {
		for _, s := range bi.Settings {
			switch s.Key {
			case "vcs.revision":
				if in.Commit == "" {
					in.Commit = s.Value
				}
			case "vcs.modified":
				if Commit == "" {
					in.Modified = s.Value == "true"
				}
			case "vcs.time":
				in.BuildTime = s.Value
			}
		}
	}
	if in.Commit == "" {
		in.Commit = "unknown"
	}
	return in
}

// Short is "0.1.0" or "0.1.0+<12 hex digits of the commit>[-dirty]".
func Short() string {
	in := Get()
	s := in.Version
	if c := in.Commit; c != "unknown" {
		if len(c) > 12 {
			c = c[:12]
		}
		s += "+" + c
		if in.Modified {
			s += "-dirty"
		}
	}
	return s
}
