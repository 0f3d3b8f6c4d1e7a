// Package testproc runs a helper test of the current test binary as a child
// process: benchmarks put a gateway, nodes or a group of gateways there so
// that their CPU time, memory and file descriptors are their own. The
// parent starts the child with Start and reads the words it prints on
// standard output (Expect); the child, a Test function that skips unless its
// environment names it, prints "READY ..." (or "ERR ...") and serves until
// Wait returns: its standard input closed (the parent stopped it or died)
// or SIGTERM.
//
// It is test support: only _test.go files import it.
package testproc

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// StopTimeout is how long Stop waits for a child to exit after each way
// of asking it to (standard input closed, SIGTERM) before the next one
// (SIGTERM, SIGKILL).
const StopTimeout = 30 * time.Second

// Proc is a running child process.
type Proc struct {
	name  string
	cmd   *exec.Cmd
	stdin io.Closer
	// done is closed when the child's standard output ends (it exited).
	done chan struct{}

	mu    sync.Mutex
	lines []string      // standard output not yet taken by Expect
	more  chan struct{} // signalled when a line arrives
	stop  sync.Once
	err   error // of Wait
}

// Start runs this test binary again with -test.run=^helper$ and env added
// to the environment; the child's standard error is this process's. The
// caller stops it (Stop), which may be after t's test: a benchmark keeps
// its children from its run with b.N = 1 to the next. Should this process
// end first, the child's standard input closes and Wait returns there.
func Start(t testing.TB, helper string, env ...string) *Proc {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^"+helper+"$", "-test.count=1")
	cmd.Env = append(os.Environ(), env...)
	cmd.Stderr = os.Stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", helper, err)
	}
	p := &Proc{name: helper, cmd: cmd, stdin: stdin, done: make(chan struct{}), more: make(chan struct{}, 1)}
	go p.read(out) // ends when the child's standard output closes
	return p
}

func (p *Proc) read(out io.Reader) {
	defer close(p.done)
	sc := bufio.NewScanner(out)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		p.mu.Lock()
		p.lines = append(p.lines, sc.Text())
		p.mu.Unlock()
		select {
		case p.more <- struct{}{}:
		default:
		}
	}
}

// Pid is the child's process ID.
func (p *Proc) Pid() int { return p.cmd.Process.Pid }

// Expect waits up to timeout for the next line of the child's output that
// starts with word and returns that line's fields after word; the lines
// before it are dropped. A line "ERR ...", the child's exit or the timeout
// fail t.
func (p *Proc) Expect(t testing.TB, timeout time.Duration, word string) []string {
	t.Helper()
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	for {
		p.mu.Lock()
		for len(p.lines) > 0 {
			f := strings.Fields(p.lines[0])
			p.lines = p.lines[1:]
			if len(f) > 0 && f[0] == word {
				p.mu.Unlock()
				return f[1:]
			}
			if len(f) > 0 && f[0] == "ERR" {
				p.mu.Unlock()
				t.Fatalf("%s: %s", p.name, strings.Join(f, " "))
			}
		}
		p.mu.Unlock()
		select {
		case <-p.more:
		case <-p.done:
			p.mu.Lock()
			left := len(p.lines)
			p.mu.Unlock()
			if left == 0 {
				t.Fatalf("%s exited before it printed %s", p.name, word)
			}
		case <-timer.C:
			t.Fatalf("%s did not print %s within %v", p.name, word, timeout)
		}
	}
}

// Stop asks the child to exit by closing its standard input; if it is
// still running after StopTimeout it gets SIGTERM, and after another
// StopTimeout it is killed. Stop returns the child's exit error; calling it
// again returns the same. (SIGTERM is not the first request: a child that
// has not reached Wait yet would die of it instead of closing its peers.)
func (p *Proc) Stop() error {
	p.stop.Do(func() {
		_ = p.stdin.Close()
		select {
		case <-p.done:
		case <-time.After(StopTimeout):
			_ = p.cmd.Process.Signal(syscall.SIGTERM)
			select {
			case <-p.done:
			case <-time.After(StopTimeout):
				_ = p.cmd.Process.Kill()
				<-p.done
			}
		}
		p.err = p.cmd.Wait()
		if p.err != nil {
			p.err = fmt.Errorf("%s: %w", p.name, p.err)
		}
	})
	return p.err
}

// Wait is the child's side: it returns when the parent stops the child
// (standard input closed, or SIGTERM if that did not work). From then on
// SIGTERM is ignored: the child is shutting down cleanly already.
func Wait() {
	term := make(chan os.Signal, 1)
	signal.Notify(term, syscall.SIGTERM)
	defer signal.Ignore(syscall.SIGTERM)
	eof := make(chan struct{})
	go func() { // ends when standard input closes, which Stop does
		_, _ = io.Copy(io.Discard, os.Stdin)
		close(eof)
	}()
	select {
	case <-eof:
	case <-term:
	}
}
