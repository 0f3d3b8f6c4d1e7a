// Package pgtest starts a real PostgreSQL server (Debian's postgresql
// package) for a test: initdb into a fresh directory, the server on
// 127.0.0.1 at a free port and on a unix socket in that directory, stopped
// and removed in t.Cleanup. As root (here and in CI) initdb and postgres run
// as the postgres system user, because PostgreSQL refuses to run as root.
//
// Without the binaries a test is skipped with a message saying what to
// install, except when CI=true: then it fails, so that CI never passes
// without having run it.
package pgtest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// Superuser is the superuser initdb creates; Password is its password for
// TCP connections (scram-sha-256). Unix-socket connections are trusted.
const (
	Superuser = "fedgrid"
	Password  = "pgtest-secret-Hx7q"
)

// Server is a running PostgreSQL server.
type Server struct {
	// Dir holds the data directory (Dir/data), the socket and the log.
	Dir string
	// Port is the TCP port on 127.0.0.1 (and the socket's number).
	Port int
	cmd  *exec.Cmd
	log  *lockedBuffer
	done chan error
}

// lockedBuffer is the server's output, written by exec's copier goroutine
// while the test may read it.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// BinDir finds the directory of Debian's PostgreSQL server binaries
// (/usr/lib/postgresql/<major>/bin, newest major first), or "".
func BinDir() string {
	dirs, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
	slices.SortFunc(dirs, func(a, b string) int { return majorOf(b) - majorOf(a) })
	for _, d := range dirs {
		if _, err := os.Stat(filepath.Join(d, "initdb")); err == nil {
			return d
		}
	}
	if p, err := exec.LookPath("initdb"); err == nil {
		return filepath.Dir(p)
	}
	return ""
}

func majorOf(dir string) int {
	n, _ := strconv.Atoi(filepath.Base(filepath.Dir(dir)))
	return n
}

// Start starts a server for t, or skips t (fails it with CI=true) when
// PostgreSQL is not installed.
func Start(t testing.TB) *Server {
	t.Helper()
	bin := BinDir()
	if bin == "" {
		msg := "PostgreSQL server binaries not found (Debian: apt-get install postgresql)"
		if os.Getenv("CI") == "true" {
			t.Fatal(msg + "; CI must run this test")
		}
		t.Skip(msg)
	}
	cred, uid, gid, err := runAs()
	if err != nil {
		t.Fatal(err)
	}
	// Not t.TempDir: its parent is private to root, and postgres (the
	// user) must reach the directory.
	dir, err := os.MkdirTemp("", "pgtest-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	pwfile := filepath.Join(dir, "pwfile")
	if err := os.WriteFile(pwfile, []byte(Password+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if cred != nil {
		for _, p := range []string{dir, pwfile} {
			if err := os.Chown(p, uid, gid); err != nil {
				t.Fatal(err)
			}
		}
	}
	data := filepath.Join(dir, "data")
	initdb := exec.Command(filepath.Join(bin, "initdb"), "-D", data, "-U", Superuser, "--pwfile", pwfile,
		"--auth-local=trust", "--auth-host=scram-sha-256", "-E", "UTF8", "--locale=C", "--no-sync")
	initdb.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
	initdb.Dir = dir
	if out, err := initdb.CombinedOutput(); err != nil {
		t.Fatalf("initdb: %v\n%s", err, out)
	}
	_ = os.Remove(pwfile)
	// A free port can be taken by another process between our probe and
	// the server's bind; then the server exits at once and we try again.
	var s *Server
	for attempt := 1; ; attempt++ {
		s, err = start(bin, dir, data, cred)
		if err == nil {
			break
		}
		if attempt == 5 || !strings.Contains(err.Error(), "could not bind") && !strings.Contains(err.Error(), "could not create") {
			t.Fatal(err)
		}
	}
	t.Cleanup(func() {
		if err := s.stop(); err != nil {
			t.Errorf("stop postgres: %v\n%s", err, s.log.String())
		}
	})
	return s
}

// runAs is the credential initdb and postgres run with: the postgres
// system user when this process is root, else this process's own.
func runAs() (*syscall.Credential, int, int, error) {
	if os.Geteuid() != 0 {
		return nil, os.Getuid(), os.Getgid(), nil
	}
	u, err := user.Lookup("postgres")
	if err != nil {
		return nil, 0, 0, fmt.Errorf("pgtest: running as root needs the postgres system user (the postgresql package creates it): %w", err)
	}
	uid, err1 := strconv.Atoi(u.Uid)
	gid, err2 := strconv.Atoi(u.Gid)
	if err := errors.Join(err1, err2); err != nil {
		return nil, 0, 0, fmt.Errorf("pgtest: postgres user: %w", err)
	}
	return &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}, uid, gid, nil
}

func freePort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}

func start(bin, dir, data string, cred *syscall.Credential) (*Server, error) {
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	s := &Server{Dir: dir, Port: port, log: &lockedBuffer{}, done: make(chan error, 1)}
	s.cmd = exec.Command(filepath.Join(bin, "postgres"), "-D", data, "-p", strconv.Itoa(port),
		"-c", "listen_addresses=127.0.0.1", "-c", "unix_socket_directories="+dir,
		"-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off",
		"-c", "max_connections=30", "-c", "shared_buffers=16MB", "-c", "log_min_messages=warning")
	s.cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred, Setpgid: true}
	s.cmd.Stdout, s.cmd.Stderr = s.log, s.log
	if err := s.cmd.Start(); err != nil {
		return nil, fmt.Errorf("start postgres: %w", err)
	}
	go func() { s.done <- s.cmd.Wait() }() // owned by stop, which receives it
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		conn, err := pgconn.Connect(ctx, s.SocketDSN("postgres"))
		if err == nil {
			_ = conn.Close(ctx)
			return s, nil
		}
		select {
		case werr := <-s.done:
			s.done <- werr
			return nil, fmt.Errorf("postgres exited before accepting connections (%v): %s", werr, s.log.String())
		case <-ctx.Done():
			_ = s.stop()
			return nil, fmt.Errorf("postgres did not accept connections within 60 s (last: %v): %s", err, s.log.String())
		case <-tick.C:
		}
	}
}

// stop asks for a fast shutdown (SIGINT) and waits for it; a server that
// does not stop within 30 s is killed.
func (s *Server) stop() error {
	_ = s.cmd.Process.Signal(syscall.SIGINT)
	select {
	case err := <-s.done:
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			return nil // a signalled exit
		}
		return err
	case <-time.After(30 * time.Second):
		_ = syscall.Kill(-s.cmd.Process.Pid, syscall.SIGKILL)
		<-s.done
		return errors.New("postgres did not stop within 30 s after SIGINT; killed")
	}
}

// Log is what the server printed so far.
func (s *Server) Log() string { return s.log.String() }

// SocketDSN is a connection string for the superuser over the unix socket
// (trusted, no password) to database db.
func (s *Server) SocketDSN(db string) string {
	return fmt.Sprintf("host=%s port=%d user=%s dbname=%s sslmode=disable", s.Dir, s.Port, Superuser, db)
}

// URL is a postgres:// URL over TCP on 127.0.0.1 for user to database db,
// without a password (fedgrid keeps passwords out of URLs).
func (s *Server) URL(user, db string) string {
	return fmt.Sprintf("postgres://%s@127.0.0.1:%d/%s?sslmode=disable", user, s.Port, db)
}

// Exec runs SQL statements as the superuser in database db (over the socket).
func (s *Server) Exec(t testing.TB, db string, sql ...string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	conn, err := pgx.Connect(ctx, s.SocketDSN(db))
	if err != nil {
		t.Fatalf("pgtest: connect to %s: %v", db, err)
	}
	defer conn.Close(ctx)
	for _, q := range sql {
		if _, err := conn.Exec(ctx, q); err != nil {
			t.Fatalf("pgtest: %s: %v", q, err)
		}
	}
}

// PassFile writes a password file (the libpq .pgpass format, mode 0600)
// giving Password for user on this server's TCP address, and returns its path.
func (s *Server) PassFile(t testing.TB, user string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "pgpass")
	line := fmt.Sprintf("127.0.0.1:%d:*:%s:%s\n", s.Port, user, Password)
	if err := os.WriteFile(p, []byte(line), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}
