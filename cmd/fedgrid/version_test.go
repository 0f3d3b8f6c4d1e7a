package main

import (
	"bytes"
	"encoding/json"
	"runtime"
	"strings"
	"testing"

	"github.com/fedgrid/fedgrid/internal/version"
)

func TestVersionCommand(t *testing.T) {
	var out, errOut bytes.Buffer
	if code := run([]string{"version", "--json"}, &out, &errOut); code != 0 {
		t.Fatalf("version --json: exit %d: %s", code, errOut.String())
	}
	var in version.Info
	if err := json.Unmarshal(out.Bytes(), &in); err != nil {
		t.Fatalf("version --json printed %q: %v", out.String(), err)
	}
	if in.Version != version.Version || in.Go != runtime.Version() || in.Commit == "" ||
		in.Protocols.Streams != "/fedgrid/<network>/<name>/"+version.StreamProtocol || in.Protocols.Plan != version.PlanFormat {
		t.Errorf("version --json = %+v", in)
	}

	out.Reset()
	if code := run([]string{"version"}, &out, &errOut); code != 0 {
		t.Fatalf("version: exit %d: %s", code, errOut.String())
	}
	text := out.String()
	for _, want := range []string{"fedgrid " + version.Version + "\n", "commit:", runtime.Version(), version.PlanFormat, version.ModelFormat} {
		if !strings.Contains(text, want) {
			t.Errorf("version output lacks %q:\n%s", want, text)
		}
	}
	out.Reset()
	if code := run([]string{"--version"}, &out, &errOut); code != 0 || out.String() != text {
		t.Errorf("--version (exit %d) printed %q, want what version prints, %q", code, out.String(), text)
	}
}

func TestVersionShort(t *testing.T) {
	defer func(c, d string) { version.Commit, version.Dirty = c, d }(version.Commit, version.Dirty)
	version.Commit, version.Dirty = "0123456789abcdef0123", "true"
	if got, want := version.Short(), version.Version+"+0123456789ab-dirty"; got != want {
		t.Errorf("Short() = %q, want %q", got, want)
	}
	version.Dirty = ""
	if got, want := version.Short(), version.Version+"+0123456789ab"; got != want {
		t.Errorf("Short() = %q, want %q", got, want)
	}
}
