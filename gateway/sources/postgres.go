package sources

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgpassfile"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// pgAllowedKeys are the connection settings a postgres:// URL may carry.
// Everything else is refused before anything is read from disk: pgx would
// read files named by passfile, servicefile, sslkey, sslcert or sslrootcert,
// and a password belongs in the gateway's password file, not in a URL.
var pgAllowedKeys = []string{"host", "port", "user", "database", "sslmode", "connect_timeout", "application_name"}

// pgTarget is a checked postgres:// URL: one host, a user, a database.
type pgTarget struct {
	Host, User, Database string
	Port                 int
}

// checkPostgresURL checks a source URL and returns what it names. Its
// errors never quote the URL (it might carry a password by mistake).
func checkPostgresURL(raw string) (*pgTarget, error) {
	u, err := url.Parse(raw)
	if err != nil {
		return nil, invalidf("url", "not a URL: write postgres://USER@HOST:PORT/DATABASE")
	}
	if u.Scheme != "postgres" && u.Scheme != "postgresql" {
		return nil, invalidf("url", "must start with postgres:// (got scheme %q)", u.Scheme)
	}
	if _, has := u.User.Password(); has {
		return nil, invalidf("url", "must not carry a password: put it in the gateway's password file "+
			"(--pgpass, a line HOST:PORT:DATABASE:USER:PASSWORD) and give postgres://USER@HOST:PORT/DATABASE")
	}
	t := &pgTarget{User: u.User.Username(), Host: u.Hostname(), Database: strings.TrimPrefix(u.Path, "/")}
	if t.User == "" {
		return nil, invalidf("url", "names no user: write postgres://USER@HOST:PORT/DATABASE")
	}
	if t.Host == "" || strings.Contains(u.Host, ",") {
		return nil, invalidf("url", "must name exactly one host")
	}
	if t.Database == "" || strings.Contains(t.Database, "/") {
		return nil, invalidf("url", "must name one database: postgres://USER@HOST:PORT/DATABASE")
	}
	t.Port = 5432
	if p := u.Port(); p != "" {
		if t.Port, err = strconv.Atoi(p); err != nil || t.Port < 1 || t.Port > 65535 {
			return nil, invalidf("url", "port must be 1 to 65535")
		}
	}
	for k := range u.Query() {
		if k == "host" || k == "port" || k == "user" || k == "database" || k == "password" || !allowed(k) {
			return nil, invalidf("url", "setting %q is not allowed in a source URL (allowed: sslmode, connect_timeout, application_name)", k)
		}
	}
	return t, nil
}

func allowed(k string) bool {
	for _, a := range pgAllowedKeys {
		if a == k {
			return true
		}
	}
	return false
}

// checkTable splits a table or view name, possibly schema-qualified
// (schema.table), into its parts.
func checkTable(table string) (pgx.Identifier, error) {
	parts := strings.Split(table, ".")
	if len(parts) > 2 {
		return nil, invalidf("table", "write TABLE or SCHEMA.TABLE")
	}
	for _, p := range parts {
		if strings.TrimSpace(p) == "" || strings.ContainsRune(p, 0) {
			return nil, invalidf("table", "write TABLE or SCHEMA.TABLE")
		}
	}
	return pgx.Identifier(parts), nil
}

// checkQuery trims a query's trailing semicolons and blanks.
func checkQuery(q string) (string, error) {
	q = strings.TrimRight(strings.TrimSpace(q), "; \t\r\n")
	if q == "" {
		return "", invalidf("query", "is empty")
	}
	if strings.ContainsRune(q, 0) {
		return "", invalidf("query", "contains a NUL byte")
	}
	return q, nil
}

// pgPassword looks the password for t up in the password file at path
// (libpq's .pgpass format). A missing file or line gives no password (the
// server may trust the gateway, or use certificates). Like libpq, a file
// others can read is refused.
func pgPassword(path string, t *pgTarget) (string, error) {
	if path == "" {
		return "", nil
	}
	fi, err := os.Stat(path)
	if errors.Is(err, os.ErrNotExist) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("password file: %w", err)
	}
	if fi.Mode().Perm()&0o077 != 0 {
		return "", fmt.Errorf("password file %s has group or world access; permissions should be u=rw (0600) or less", path)
	}
	pf, err := pgpassfile.ReadPassfile(path)
	if err != nil {
		return "", fmt.Errorf("password file %s: %w", path, err)
	}
	return pf.FindPassword(t.Host, strconv.Itoa(t.Port), t.Database, t.User), nil
}

// pgConfig is the connection to make for t: the URL's settings, the
// password from the password file only (never the environment's PGPASSWORD
// or another file), and a session that is read-only with a statement
// timeout, so that even a statement outside the snapshot's transaction
// cannot write.
func pgConfig(rawURL string, t *pgTarget, password string, stmtTimeout time.Duration) (*pgx.ConnConfig, error) {
	cfg, err := pgx.ParseConfigWithOptions(rawURL, pgx.ParseConfigOptions{
		ParseConfigOptions: pgconn.ParseConfigOptions{ConnStringAllowedKeys: pgAllowedKeys}})
	if err != nil {
		return nil, invalidf("url", "not a usable PostgreSQL URL")
	}
	cfg.Password = password
	if cfg.ConnectTimeout == 0 {
		cfg.ConnectTimeout = 30 * time.Second
	}
	if cfg.RuntimeParams == nil {
		cfg.RuntimeParams = map[string]string{}
	}
	cfg.RuntimeParams["default_transaction_read_only"] = "on"
	cfg.RuntimeParams["statement_timeout"] = strconv.FormatInt(stmtTimeout.Milliseconds(), 10)
	if cfg.RuntimeParams["application_name"] == "" {
		cfg.RuntimeParams["application_name"] = "fedgrid"
	}
	return cfg, nil
}

// copyPostgres writes the CSV (with a header row) of the source's table or
// query to w: COPY ... TO STDOUT inside a READ ONLY transaction whose
// statements end after stmtTimeout. A query is first prepared on its own,
// so it is checked as one statement that returns rows before it is
// wrapped in COPY.
func copyPostgres(ctx context.Context, cfg *pgx.ConnConfig, table, query string, w io.Writer) error {
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		return fmt.Errorf("connect to PostgreSQL: %w", err)
	}
	defer func() {
		cctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = conn.Close(cctx)
	}()
	tx, err := conn.BeginTx(ctx, pgx.TxOptions{AccessMode: pgx.ReadOnly, IsoLevel: pgx.RepeatableRead})
	if err != nil {
		return fmt.Errorf("begin read-only transaction: %w", err)
	}
	defer func() { _ = tx.Rollback(context.WithoutCancel(ctx)) }()
	var sel string
	if table != "" {
		id, err := checkTable(table)
		if err != nil {
			return err
		}
		sel = "SELECT * FROM " + id.Sanitize()
	} else {
		q, err := checkQuery(query)
		if err != nil {
			return err
		}
		sd, err := conn.PgConn().Prepare(ctx, "", q, nil)
		if err != nil {
			return fmt.Errorf("query: %w", err)
		}
		if len(sd.Fields) == 0 {
			return invalidf("query", "returns no columns: give one SELECT")
		}
		// On lines of their own, so that a trailing -- comment in the
		// query cannot swallow the closing parenthesis.
		sel = "\n" + q + "\n"
	}
	if _, err := conn.PgConn().CopyTo(ctx, w, "COPY ("+sel+") TO STDOUT (FORMAT csv, HEADER)"); err != nil {
		return fmt.Errorf("COPY: %w", err)
	}
	return tx.Commit(ctx)
}
