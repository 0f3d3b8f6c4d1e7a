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

// Ready is what a peer announces in its ready line:
// `ready peer=<id> addrs=<multiaddr>,... [http=<url>] [version=<version>]`.
type Ready struct {
	PeerID  string
	Addrs   []string // each ends in /p2p/<PeerID>
	HTTP    string   // base URL of the peer's HTTP server, "" without one
	Version string   // fedgrid's version (fedgrid version), "" if not given
}

// ParseReady parses a ready line.
func ParseReady(line string) (Ready, error) {
	line = strings.TrimSpace(line)
	rest, ok := strings.CutPrefix(line, "ready ")
	if !ok {
		return Ready{}, fmt.Errorf("not a ready line: %q", line)
	}
	var r Ready
	for _, f := range strings.Fields(rest) {
		k, v, ok := strings.Cut(f, "=")
		if !ok {
			return Ready{}, fmt.Errorf("ready line field %q is not key=value", f)
		}
		switch k {
		case "peer":
			r.PeerID = v
		case "addrs":
			for _, a := range strings.Split(v, ",") {
				if a != "" {
					r.Addrs = append(r.Addrs, a)
				}
			}
		case "http":
			r.HTTP = v
		case "version":
			r.Version = v
		}
	}
	if r.PeerID == "" {
		return Ready{}, fmt.Errorf("ready line has no peer=: %q", line)
	}
	if len(r.Addrs) == 0 {
		return Ready{}, fmt.Errorf("ready line has no addrs=: %q", line)
	}
	for _, a := range r.Addrs {
		if !strings.HasPrefix(a, "/") || !strings.HasSuffix(a, "/p2p/"+r.PeerID) {
			return Ready{}, fmt.Errorf("ready line address %q does not end in /p2p/%s", a, r.PeerID)
		}
	}
	if r.HTTP != "" && !strings.Contains(r.HTTP, "://") {
		r.HTTP = "http://" + r.HTTP
	}
	return r, nil
}

// Proc is a peer process started by Start.
type Proc struct {
	Name string
	Args []string
	// Ready is the peer's ready line, parsed.
	Ready

	cmd        *exec.Cmd
	stdout     *watchWriter
	stderr     *watchWriter
	done       chan struct{} // closed when the process has exited and its output is flushed
	waitErr    error
	stopOnce   sync.Once
	stopErr    error
	stopCalled chan struct{}
	stopAfter  time.Duration
}

// Start runs `fedgrid args...` as a peer called name (used for its log file
// names) and waits, within the ready timeout and ctx, for its ready line. A
// peer that exits or does not get ready in time is killed and an error with
// the tail of its stderr is returned. The peer keeps running after ctx ends;
// stop it with Stop, or all peers with Harness.Close.
func (h *Harness) Start(ctx context.Context, name string, args ...string) (*Proc, error) {
	p, ready, err := h.spawn(name, args)
	if err != nil {
		return nil, err
	}
	timer := time.NewTimer(h.cfg.ReadyTimeout)
	defer timer.Stop()
	select {
	case line := <-ready:
		r, err := ParseReady(line)
		if err != nil {
			p.Kill()
			return nil, fmt.Errorf("%s: %w", name, err)
		}
		p.Ready = r
		return p, nil
	case <-p.done:
		return nil, fmt.Errorf("%s exited before it was ready (%s); stderr:\n%s", name, p.State(), p.Tail(20))
	case <-timer.C:
		p.Kill()
		return nil, fmt.Errorf("%s printed no ready line within %s; stderr:\n%s", name, h.cfg.ReadyTimeout, p.Tail(20))
	case <-ctx.Done():
		p.Kill()
		return nil, fmt.Errorf("%s: waiting for ready: %w", name, ctx.Err())
	}
}

// StartCommand runs `fedgrid args...` in the background as a process called
// name, without waiting for a ready line (a command, not a peer: e.g. a
// `fedgrid train` to kill mid-way). Stop or Kill it like a peer.
func (h *Harness) StartCommand(name string, args ...string) (*Proc, error) {
	p, _, err := h.spawn(name, args)
	return p, err
}

// spawn starts the process and returns it with the channel its ready line arrives on.
func (h *Harness) spawn(name string, args []string) (*Proc, chan string, error) {
	h.mu.Lock()
	h.seq++
	file := fmt.Sprintf("%02d-%s", h.seq, sanitize(name))
	h.mu.Unlock()

	outF, err := os.Create(filepath.Join(h.LogDir(), file+".stdout"))
	if err != nil {
		return nil, nil, err
	}
	errF, err := os.Create(filepath.Join(h.LogDir(), file+".stderr"))
	if err != nil {
		outF.Close()
		return nil, nil, err
	}
	p := &Proc{Name: name, Args: args, done: make(chan struct{}), stopCalled: make(chan struct{}), stopAfter: h.cfg.StopTimeout}
	ready := make(chan string, 2)
	p.stdout = &watchWriter{f: outF, ready: ready}
	p.stderr = &watchWriter{f: errF, ready: ready}
	p.cmd = h.command(h.base, args)
	p.cmd.Stdout = p.stdout
	p.cmd.Stderr = p.stderr
	if err := p.cmd.Start(); err != nil {
		outF.Close()
		errF.Close()
		return nil, nil, fmt.Errorf("start %s: %w", name, err)
	}
	go func() { // owned by the process: ends when it exits
		p.waitErr = p.cmd.Wait()
		p.stdout.close()
		p.stderr.close()
		close(p.done)
	}()
	h.mu.Lock()
	h.procs = append(h.procs, p)
	h.mu.Unlock()
	return p, ready, nil
}

// Addr is the peer's first multiaddr (with /p2p/).
func (p *Proc) Addr() string { return p.Addrs[0] }

// PID is the process ID.
func (p *Proc) PID() int { return p.cmd.Process.Pid }

// SetupToken returns the one-time setup token a gateway printed on its first
// start (its "setup-token TOKEN ..." line, before the ready line), or "".
func (p *Proc) SetupToken() string {
	for _, l := range strings.Split(string(p.Stdout()), "\n") {
		if rest, ok := strings.CutPrefix(l, "setup-token "); ok {
			tok, _, _ := strings.Cut(rest, " ")
			return tok
		}
	}
	return ""
}

// Done is closed once the process has exited.
func (p *Proc) Done() <-chan struct{} { return p.done }

// Exited reports whether the process has exited.
func (p *Proc) Exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// ExitCode is the process's exit status once it has exited: -1 while it runs
// or when a signal ended it.
func (p *Proc) ExitCode() int {
	if !p.Exited() {
		return -1
	}
	return p.cmd.ProcessState.ExitCode()
}

// State describes the process: running, or how it ended.
func (p *Proc) State() string {
	if !p.Exited() {
		return "running"
	}
	return p.cmd.ProcessState.String()
}

// Stdout is everything the process printed on stdout so far.
func (p *Proc) Stdout() []byte { return p.stdout.bytes() }

// Stderr is everything the process printed on stderr so far.
func (p *Proc) Stderr() []byte { return p.stderr.bytes() }

// Tail returns the last lines of stderr (and stdout, when not empty).
func (p *Proc) Tail(lines int) string {
	s := tail(p.Stderr(), lines)
	if out := tail(p.Stdout(), lines); out != "" {
		s += "(stdout)\n" + out
	}
	return s
}

// LogFiles are the paths of the files holding stdout and stderr.
func (p *Proc) LogFiles() (stdout, stderr string) { return p.stdout.f.Name(), p.stderr.f.Name() }

func (p *Proc) stopped() bool {
	select {
	case <-p.stopCalled:
		return true
	default:
		return false
	}
}

// Stop sends SIGTERM and waits for the process to exit, within the stop
// timeout given to the harness; it is killed if it does not. It returns an
// error unless the process exited with status 0 because of the SIGTERM.
// Later calls return the first call's result.
func (p *Proc) Stop() error {
	p.stopOnce.Do(func() {
		close(p.stopCalled)
		p.stopErr = p.stop(syscall.SIGTERM, p.stopAfter)
	})
	return p.stopErr
}

// StopWithin is Stop with its own timeout.
func (p *Proc) StopWithin(timeout time.Duration) error {
	p.stopOnce.Do(func() {
		close(p.stopCalled)
		p.stopErr = p.stop(syscall.SIGTERM, timeout)
	})
	return p.stopErr
}

func (p *Proc) stop(sig syscall.Signal, timeout time.Duration) error {
	if p.Exited() {
		return fmt.Errorf("%s had already exited (%s) before it was stopped; stderr:\n%s", p.Name, p.State(), p.Tail(20))
	}
	if err := signalGroup(p.cmd, sig); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return fmt.Errorf("signal %s: %w", p.Name, err)
	}
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	select {
	case <-p.done:
	case <-timer.C:
		p.kill()
		return fmt.Errorf("%s did not exit within %s of %s and was killed; stderr:\n%s", p.Name, timeout, sig, p.Tail(20))
	}
	if code := p.ExitCode(); code != 0 {
		return fmt.Errorf("%s exited with %s after %s, want exit status 0; stderr:\n%s", p.Name, p.State(), sig, p.Tail(20))
	}
	return nil
}

// Kill sends SIGKILL to the process group and waits for the process to exit.
// It is for tests of failures and for cleaning up; a killed peer counts as
// stopped.
func (p *Proc) Kill() {
	p.stopOnce.Do(func() {
		close(p.stopCalled)
		p.stopErr = fmt.Errorf("%s was killed", p.Name)
	})
	p.kill()
}

// kill sends SIGKILL to the process group and waits for the process to exit.
func (p *Proc) kill() {
	if !p.Exited() {
		_ = signalGroup(p.cmd, syscall.SIGKILL)
	}
	<-p.done
}

// watchWriter writes a stream to its log file, keeps a copy in memory and
// hands the first line starting with "ready " to ready.
type watchWriter struct {
	f     *os.File
	ready chan<- string

	mu      sync.Mutex
	all     bytes.Buffer
	partial []byte
	sent    bool
}

func (w *watchWriter) Write(b []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.all.Write(b)
	_, _ = w.f.Write(b) // the in-memory copy is authoritative; a full disk must not stop the peer
	if w.sent {
		return len(b), nil
	}
	w.partial = append(w.partial, b...)
	for {
		i := bytes.IndexByte(w.partial, '\n')
		if i < 0 {
			break
		}
		line := string(w.partial[:i])
		w.partial = w.partial[i+1:]
		if strings.HasPrefix(line, "ready ") {
			w.sent = true
			w.partial = nil
			select {
			case w.ready <- line:
			default:
			}
			break
		}
	}
	return len(b), nil
}

func (w *watchWriter) bytes() []byte {
	w.mu.Lock()
	defer w.mu.Unlock()
	return bytes.Clone(w.all.Bytes())
}

func (w *watchWriter) close() {
	w.mu.Lock()
	defer w.mu.Unlock()
	_ = w.f.Close()
}

func sanitize(name string) string {
	return strings.Map(func(r rune) rune {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', r == '-', r == '_', r == '.':
			return r
		}
		return '_'
	}, name)
}
