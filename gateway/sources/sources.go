// Package sources keeps datasets the gateway reads itself, where the data
// lives, rather than receiving them by upload: a PostgreSQL table or
// read-only query (postgres://...). Registering a source takes its first
// snapshot, a new dataset; each later snapshot, on demand or on the
// source's schedule, becomes a new version of that dataset (or keeps the
// version when the bytes are the same). Every snapshot goes through
// gateway/ingest, the one way bytes become a stored dataset version.
//
// Credentials never enter a source record, the API, the audit log or the
// log: a source URL carries no password; the gateway looks it up at each
// snapshot in its password file (libpq's .pgpass format), by the URL's
// host, port, database and user.
package sources

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync"
	"time"

	"github.com/fedgrid/fedgrid/dataset"
	"github.com/fedgrid/fedgrid/gateway/ingest"
	"github.com/fedgrid/fedgrid/gateway/store"
)

// Config configures a Manager.
type Config struct {
	Store  *store.Store
	Logger *slog.Logger // nil: discard
	// PGPassFile is the password file (libpq's .pgpass format: one
	// HOST:PORT:DATABASE:USER:PASSWORD a line, mode 0600) PostgreSQL
	// passwords are read from at each snapshot. "": no passwords.
	PGPassFile string
	// Limits bound one snapshot's CSV (zero fields: what ingest.Dataset
	// takes, no byte or row limit and 1,000 columns).
	Limits dataset.Limits
	// StatementTimeout ends a snapshot's statements on the database
	// (default 10 min); the whole snapshot gets one more minute.
	StatementTimeout time.Duration
	// Poll is how often Run looks for scheduled snapshots that are due
	// (default 30 s).
	Poll time.Duration
	// FileDirs are the directories whose files (CSV or Parquet, named by
	// file:///path) may be registered as sources (AllowedDirs); none: file
	// sources are refused.
	FileDirs Dirs
	// Added is called after a snapshot stored a new dataset or version.
	Added func(*store.Dataset)
	// Now is the schedule's clock (default time.Now).
	Now func() time.Time
	// Resolver looks PostgreSQL host names up, once a snapshot (default
	// net.DefaultResolver).
	Resolver Resolver
}

// Manager registers sources and takes their snapshots. At most one
// snapshot of a dataset runs at a time. A snapshot does not end with the
// context of the call that started it (an HTTP request whose client left,
// or whose server timed the connection out, would otherwise cut every
// long snapshot): it runs until it is done, its own timeout passes or the
// Manager is closed.
type Manager struct {
	cfg  Config
	log  *slog.Logger
	mu   sync.Mutex
	busy map[string]bool // dataset ID -> a snapshot is running

	life    context.Context // ends at Close
	stop    context.CancelFunc
	running sync.WaitGroup // snapshots in progress
}

// ErrBusy: a snapshot of the dataset is already running.
var ErrBusy = errors.New("a snapshot of this dataset is already running")

// ErrClosed: the Manager (the gateway) is stopping.
var ErrClosed = errors.New("the gateway is stopping: no new snapshots")

// SnapshotError is a snapshot that failed at the source or was refused by
// ingest; its message is safe to show the dataset's owner (it never holds
// a password).
type SnapshotError struct{ Msg string }

func (e *SnapshotError) Error() string { return e.Msg }

// New makes a Manager.
func New(cfg Config) *Manager {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.StatementTimeout <= 0 {
		cfg.StatementTimeout = 10 * time.Minute
	}
	if cfg.Poll <= 0 {
		cfg.Poll = 30 * time.Second
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Resolver == nil {
		cfg.Resolver = net.DefaultResolver
	}
	m := &Manager{cfg: cfg, log: cfg.Logger, busy: map[string]bool{}}
	m.life, m.stop = context.WithCancel(context.Background())
	return m
}

// Close stops the snapshots in progress and waits for them to end; later
// ones get ErrClosed. Idempotent.
func (m *Manager) Close() {
	m.mu.Lock()
	m.stop()
	m.mu.Unlock()
	m.running.Wait()
}

// begin starts a snapshot: a context that keeps ctx's values but ends only
// at Close, and the function that ends the snapshot.
func (m *Manager) begin(ctx context.Context) (context.Context, func(), error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.life.Err() != nil {
		return nil, nil, ErrClosed
	}
	m.running.Add(1)
	c, cancel := context.WithCancel(context.WithoutCancel(ctx))
	unhook := context.AfterFunc(m.life, cancel)
	return c, func() { unhook(); cancel(); m.running.Done() }, nil
}

func invalidf(field, format string, args ...any) error {
	return &store.InvalidError{Field: field, Reason: fmt.Sprintf(format, args...)}
}

// Registration is a new source and the description of its dataset.
type Registration struct {
	Kind, URL, Table, Query string
	IntervalSeconds         int64
	Name, Description       string
	Tags                    []string
	Visibility              string
}

// Register checks a source, takes its first snapshot as a new dataset and
// keeps the source. Nothing is stored when the snapshot fails.
func (m *Manager) Register(ctx context.Context, r Registration, actor string) (*store.Dataset, *store.DatasetSource, error) {
	src := &store.DatasetSource{Kind: r.Kind, URL: strings.TrimSpace(r.URL), Table: strings.TrimSpace(r.Table), Query: r.Query,
		IntervalSeconds: r.IntervalSeconds, CreatedBy: actor}
	if err := m.check(src); err != nil {
		return nil, nil, err
	}
	ctx, end, err := m.begin(ctx)
	if err != nil {
		return nil, nil, err
	}
	defer end()
	d := &store.Dataset{Name: r.Name, Description: r.Description, Tags: r.Tags, Visibility: r.Visibility, CreatedBy: actor}
	if d.Visibility == "" {
		d.Visibility = store.VisibilityPrivate
	}
	if err := m.snapshot(ctx, src, d, actor); err != nil {
		return nil, nil, err
	}
	src.DatasetID, src.LastVersion, src.LastSnapshotAt = d.ID, d.Version, m.cfg.Now().UTC()
	if err := m.cfg.Store.PutDatasetSource(src, actor); err != nil {
		if derr := m.cfg.Store.DeleteDatasetBy(d.ID, actor); derr != nil {
			m.log.Error("remove a dataset whose source could not be stored", "dataset", d.ID, "err", derr)
		}
		return nil, nil, err
	}
	m.log.Info("dataset source registered", "dataset", d.ID, "kind", src.Kind, "url", src.URL, "rows", d.Rows, "version", d.Version)
	if m.cfg.Added != nil {
		m.cfg.Added(d)
	}
	return d, src, nil
}

// check refuses a source that cannot work before anything is read.
func (m *Manager) check(src *store.DatasetSource) error {
	switch src.Kind {
	case store.SourcePostgres:
		if _, err := checkPostgresURL(src.URL); err != nil {
			return err
		}
		if src.Table != "" {
			if _, err := checkTable(src.Table); err != nil {
				return err
			}
		}
		if src.Query != "" {
			if _, err := checkQuery(src.Query); err != nil {
				return err
			}
		}
	case store.SourceFile:
		if _, err := FilePath(src.URL, m.cfg.FileDirs); err != nil {
			return err
		}
	}
	return src.Validate()
}

// Snapshot takes a new snapshot of a dataset's source now. The dataset
// gets a new version when the bytes differ from the current version's
// (else it keeps its version); the source records the outcome.
func (m *Manager) Snapshot(ctx context.Context, datasetID, actor string) (*store.Dataset, *store.DatasetSource, error) {
	ctx, end, err := m.begin(ctx)
	if err != nil {
		return nil, nil, err
	}
	defer end()
	m.mu.Lock()
	if m.busy[datasetID] {
		m.mu.Unlock()
		return nil, nil, ErrBusy
	}
	m.busy[datasetID] = true
	m.mu.Unlock()
	defer func() {
		m.mu.Lock()
		delete(m.busy, datasetID)
		m.mu.Unlock()
	}()
	src, err := m.cfg.Store.DatasetSource(datasetID)
	if err != nil {
		if errors.Is(err, store.ErrNotFound) {
			return nil, nil, fmt.Errorf("%w: dataset %s has no source (it was uploaded)", store.ErrNotFound, datasetID)
		}
		return nil, nil, err
	}
	d, err := m.cfg.Store.Dataset(datasetID)
	if err != nil {
		return nil, nil, err
	}
	before := d.Version
	snapErr := m.snapshot(ctx, src, d, actor)
	var msg string
	if snapErr != nil {
		msg = snapErr.Error()
	}
	src, err = m.cfg.Store.RecordSnapshot(datasetID, d.Version, msg, actor)
	if errors.Is(err, store.ErrNotFound) && snapErr == nil {
		// The dataset (and its source) was deleted while the snapshot ran,
		// which stored it again: delete it once more.
		if derr := m.cfg.Store.DeleteDatasetBy(datasetID, actor); derr != nil && !errors.Is(derr, store.ErrNotFound) {
			err = errors.Join(err, derr)
		}
		return nil, nil, fmt.Errorf("dataset %s was deleted during its snapshot: %w", datasetID, err)
	}
	if err != nil {
		return nil, nil, errors.Join(snapErr, err)
	}
	if snapErr != nil {
		m.log.Warn("dataset snapshot failed", "dataset", datasetID, "kind", src.Kind, "url", src.URL, "err", msg)
		return nil, src, snapErr
	}
	m.log.Info("dataset snapshot", "dataset", datasetID, "kind", src.Kind, "url", src.URL, "rows", d.Rows, "version", d.Version, "new", d.Version != before)
	if d.Version != before && m.cfg.Added != nil {
		m.cfg.Added(d)
	}
	return d, src, nil
}

// errStopped ends a COPY whose reader (ingest) has stopped reading.
var errStopped = errors.New("snapshot stopped reading")

// snapshot streams the source's CSV into ingest.Dataset through a pipe, so
// the table is never whole in this process on its way. It connects only to
// an address of the source's host that its creator may reach
// (destination), checked now. Errors are *SnapshotError,
// *HostRefusedError (or the store's) with any password removed.
func (m *Manager) snapshot(ctx context.Context, src *store.DatasetSource, d *store.Dataset, actor string) error {
	if src.Kind == store.SourceFile {
		return m.snapshotFile(ctx, src, d)
	}
	if src.Kind != store.SourcePostgres {
		return invalidf("kind", "%s sources are not supported by this gateway", src.Kind)
	}
	t, err := checkPostgresURL(src.URL)
	if err != nil {
		return err
	}
	dest, err := m.destination(ctx, t, src, actor)
	if err != nil {
		return err
	}
	password, err := pgPassword(m.cfg.PGPassFile, t)
	if err != nil {
		return &SnapshotError{Msg: err.Error()}
	}
	cfg, err := pgConfig(src.URL, t, password, m.cfg.StatementTimeout)
	if err != nil {
		return err
	}
	dest.pin(cfg)
	ctx, cancel := context.WithTimeout(ctx, m.cfg.StatementTimeout+time.Minute)
	defer cancel()
	pr, pw := io.Pipe()
	copied := make(chan error, 1)
	go func() { // owned by this call, which waits for it below
		bw := bufio.NewWriterSize(pw, 64<<10) // one pipe hand-over per 64 KiB, not per row
		err := copyPostgres(ctx, cfg, src.Table, src.Query, bw)
		if err == nil {
			err = bw.Flush()
		}
		_ = pw.CloseWithError(err) // nil: EOF, only once the transaction has ended well
		copied <- err
	}()
	ingestErr := ingest.Dataset(ctx, m.cfg.Store, d, pr, m.cfg.Limits)
	_ = pr.CloseWithError(errStopped)
	if ingestErr != nil {
		cancel()
	}
	copyErr := <-copied
	switch {
	case copyErr != nil && !errors.Is(copyErr, errStopped) && !(ingestErr != nil && errors.Is(copyErr, context.Canceled)):
		var ie *store.InvalidError
		if errors.As(copyErr, &ie) {
			return copyErr
		}
		return &SnapshotError{Msg: scrub(describe(copyErr), password)}
	case ingestErr != nil:
		var bad *ingest.BadInputError
		if errors.As(ingestErr, &bad) {
			return &SnapshotError{Msg: scrub("the table's CSV was refused: "+bad.Error(), password)}
		}
		return ingestErr
	}
	return nil
}

// describe is a failed COPY's message for the dataset's owner.
func describe(err error) string {
	if errors.Is(err, context.DeadlineExceeded) {
		return "the snapshot took too long and was stopped: " + err.Error()
	}
	return err.Error()
}

// scrub removes a password from a message, should a driver or server
// ever quote it.
func scrub(msg, password string) string {
	if password == "" {
		return msg
	}
	return strings.ReplaceAll(msg, password, "********")
}

// RunDue takes the scheduled snapshots due at now, one after another, and
// returns how many it started. A failed one is recorded on its source and
// tried again an interval later.
func (m *Manager) RunDue(ctx context.Context, now time.Time) int {
	srcs, err := m.cfg.Store.DatasetSources()
	if err != nil {
		m.log.Error("list dataset sources", "err", err)
		return 0
	}
	n := 0
	for _, s := range srcs {
		if ctx.Err() != nil {
			break
		}
		if !s.Due(now) {
			continue
		}
		n++
		if _, _, err := m.Snapshot(ctx, s.DatasetID, ""); err != nil && !errors.Is(err, ErrBusy) && !errors.Is(err, ErrClosed) {
			m.log.Debug("scheduled snapshot", "dataset", s.DatasetID, "err", err)
		}
	}
	return n
}

// Run takes scheduled snapshots as they fall due until ctx ends.
func (m *Manager) Run(ctx context.Context) {
	tick := time.NewTicker(m.cfg.Poll)
	defer tick.Stop()
	for {
		m.RunDue(ctx, m.cfg.Now())
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}
