// Package harness runs the real fedgrid binary as separate processes: peers
// (network, gateway, node) that stay up until stopped, and the data
// scientist's one-shot commands whose JSON output it parses. It also speaks
// the gateway's HTTP admin API. The demo (examples/demo) and the
// multi-process tests (e2e) are built on it.
//
// Everything here talks to fedgrid only through its public interface
// (CONTRACT.md): command lines, the ready line, exit codes, JSON on stdout and
// HTTP. It never imports the packages that implement fedgrid.
package harness

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Loopback listen addresses: ephemeral ports on 127.0.0.1 only.
const (
	LoopbackListen = "/ip4/127.0.0.1/tcp/0"
	LoopbackHTTP   = "127.0.0.1:0"
)

// Defaults of Config.
const (
	DefaultReadyTimeout = 30 * time.Second
	DefaultStopTimeout  = 15 * time.Second
)

// Config of a Harness.
type Config struct {
	// Bin is the fedgrid binary.
	Bin string
	// Dir holds every peer's data directory and the logs (Dir/logs). It must exist.
	Dir string
	// ReadyTimeout bounds how long a peer may take to print its ready line.
	ReadyTimeout time.Duration
	// StopTimeout bounds how long a peer may take to exit after SIGTERM.
	StopTimeout time.Duration
	// Env is added to the environment of every process. FEDGRID_* variables of
	// this process's own environment are not passed on, so that the caller's
	// settings cannot change what the harness starts.
	Env []string
}

// Harness starts fedgrid processes and remembers them, so that all can be
// stopped at the end.
type Harness struct {
	cfg Config
	// base outlives the callers' contexts: a peer is killed through it only
	// when Close gives up on stopping it gracefully.
	base   context.Context
	cancel context.CancelFunc

	mu    sync.Mutex
	procs []*Proc
	seq   int
}

// New checks the binary and the directory and returns a Harness.
func New(cfg Config) (*Harness, error) {
	if cfg.Bin == "" {
		return nil, errors.New("harness: no fedgrid binary given")
	}
	bin, err := filepath.Abs(cfg.Bin)
	if err != nil {
		return nil, err
	}
	st, err := os.Stat(bin)
	if err != nil {
		return nil, fmt.Errorf("harness: fedgrid binary: %w (run make build)", err)
	}
	if st.IsDir() || st.Mode()&0o111 == 0 {
		return nil, fmt.Errorf("harness: %s is not an executable file", bin)
	}
	cfg.Bin = bin
	if cfg.Dir == "" {
		return nil, errors.New("harness: no work directory given")
	}
	if cfg.Dir, err = filepath.Abs(cfg.Dir); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(filepath.Join(cfg.Dir, "logs"), 0o755); err != nil {
		return nil, fmt.Errorf("harness: %w", err)
	}
	if cfg.ReadyTimeout <= 0 {
		cfg.ReadyTimeout = DefaultReadyTimeout
	}
	if cfg.StopTimeout <= 0 {
		cfg.StopTimeout = DefaultStopTimeout
	}
	h := &Harness{cfg: cfg}
	h.base, h.cancel = context.WithCancel(context.Background())
	return h, nil
}

// Bin is the absolute path of the fedgrid binary.
func (h *Harness) Bin() string { return h.cfg.Bin }

// Dir is the work directory.
func (h *Harness) Dir() string { return h.cfg.Dir }

// LogDir is where every process's stdout and stderr are written.
func (h *Harness) LogDir() string { return filepath.Join(h.cfg.Dir, "logs") }

// Path joins elem onto the work directory.
func (h *Harness) Path(elem ...string) string {
	return filepath.Join(append([]string{h.cfg.Dir}, elem...)...)
}

// Procs lists the peers started so far, in start order.
func (h *Harness) Procs() []*Proc {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]*Proc(nil), h.procs...)
}

// env is the environment of a child: ours without FEDGRID_*, plus cfg.Env.
func (h *Harness) env() []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "FEDGRID_") {
			env = append(env, kv)
		}
	}
	return append(env, h.cfg.Env...)
}

// command makes an exec.Cmd in its own process group, so that a Ctrl-C in
// the caller's terminal does not reach it and it can be signalled as a group.
func (h *Harness) command(ctx context.Context, args []string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, h.cfg.Bin, args...)
	cmd.Env = h.env()
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return signalGroup(cmd, syscall.SIGKILL) }
	cmd.WaitDelay = 5 * time.Second
	return cmd
}

func signalGroup(cmd *exec.Cmd, sig syscall.Signal) error {
	if cmd.Process == nil {
		return errors.New("process not started")
	}
	// The process leads its own group (Setpgid), so -pid is the group.
	err := syscall.Kill(-cmd.Process.Pid, sig)
	if errors.Is(err, syscall.ESRCH) {
		return os.ErrProcessDone
	}
	return err
}

// Close stops every peer still running (SIGTERM, in reverse start order) and
// reports those that did not exit 0. A peer that does not exit within the stop
// timeout is killed. Close is safe to call more than once.
func (h *Harness) Close() error {
	err := h.StopAll()
	h.cancel()
	return err
}

// StopAll stops every running peer with SIGTERM, newest first, and returns
// the joined errors of those that did not exit 0 within the stop timeout.
// Peers already stopped through Stop are not checked again.
func (h *Harness) StopAll() error {
	procs := h.Procs()
	var errs []error
	for i := len(procs) - 1; i >= 0; i-- {
		p := procs[i]
		if p.stopped() {
			continue
		}
		if err := p.Stop(); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// KillAll sends SIGKILL to every peer still running and waits for them.
func (h *Harness) KillAll() {
	for _, p := range h.Procs() {
		p.Kill()
	}
}

// LogTails returns the last lines of every peer's stderr and stdout, for a
// failure report.
func (h *Harness) LogTails(lines int) string {
	var b strings.Builder
	for _, p := range h.Procs() {
		fmt.Fprintf(&b, "----- %s (%s) -----\n", p.Name, p.State())
		b.WriteString(p.Tail(lines))
	}
	return b.String()
}

// tail returns the last n lines of s.
func tail(s []byte, n int) string {
	s = bytes.TrimRight(s, "\n")
	if len(s) == 0 {
		return ""
	}
	lines := bytes.Split(s, []byte("\n"))
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return string(bytes.Join(lines, []byte("\n"))) + "\n"
}
