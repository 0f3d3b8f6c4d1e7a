package main

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"runtime/debug"
	"strings"
	"syscall"

	ma "github.com/multiformats/go-multiaddr"
	"github.com/spf13/cobra"

	"github.com/fedgrid/fedgrid/gateway"
	"github.com/fedgrid/fedgrid/internal/config"
	"github.com/fedgrid/fedgrid/internal/memtrim"
	"github.com/fedgrid/fedgrid/internal/version"
	"github.com/fedgrid/fedgrid/network"
	"github.com/fedgrid/fedgrid/node"
	"github.com/fedgrid/fedgrid/obs"
	"github.com/fedgrid/fedgrid/p2p"
	"github.com/fedgrid/fedgrid/plan"
)

type peerFlags struct {
	data      string
	network   string
	listen    []string
	bootstrap []string
	pskFile   string
	reach     p2p.Reach
}

func (pf *peerFlags) add(c *cobra.Command, defaultListen string) {
	c.Flags().StringVar(&pf.data, "data", "", "data directory (identity, state)")
	c.Flags().StringVar(&pf.network, "network", p2p.DefaultNetwork, "network name: the DHT namespace and topics")
	c.Flags().StringArrayVar(&pf.listen, "listen", nil, "listen multiaddr, repeatable (default "+defaultListen+")")
	c.Flags().StringArrayVar(&pf.bootstrap, "bootstrap", nil, "bootstrap peer multiaddr with /p2p/, repeatable")
	c.Flags().StringVar(&pf.pskFile, "psk-file", "", "private network key file (64 hex characters); peers without it cannot connect")
	c.Flags().StringArrayVar(&pf.reach.Announce, "announce", nil, "multiaddr to tell other peers instead of the listen addresses (e.g. the public address of a NAT or load balancer), repeatable")
	c.Flags().StringArrayVar(&pf.reach.NoAnnounce, "no-announce", nil, "multiaddr or CIDR (10.0.0.0/8) never told to other peers, repeatable")
	defReach := p2p.ReachAuto
	if c.Name() == "network" {
		defReach = p2p.ReachPublic
	}
	c.Flags().StringVar(&pf.reach.Reachability, "reachability", defReach, "auto (AutoNAT decides; it judges public addresses only), public, or private (behind NAT: reserve a relay slot at a bootstrap peer and advertise relay addresses)")
}

// prepare checks the peer flags, creates the data directory and reads the
// private network key, if any.
func (pf *peerFlags) prepare() ([]byte, error) {
	if err := pf.check(); err != nil {
		return nil, err
	}
	psk, err := pf.psk()
	if err != nil {
		return nil, usageError{err}
	}
	return psk, nil
}

func (pf *peerFlags) check() error {
	if pf.data == "" {
		return usagef("--data DIR is required")
	}
	if _, err := p2p.ParseAddrInfos(pf.bootstrap); err != nil {
		return usagef("--bootstrap: %v", err)
	}
	if err := p2p.ValidateReachability(pf.reach.Reachability); err != nil {
		return usagef("--reachability: %v", err)
	}
	for _, a := range pf.reach.Announce {
		if _, err := ma.NewMultiaddr(a); err != nil {
			return usagef("--announce %q is not a multiaddr: %v", a, err)
		}
	}
	if err := os.MkdirAll(pf.data, 0o700); err != nil {
		return fmt.Errorf("create data directory: %w", err)
	}
	return p2p.ValidateNetworkName(pf.network)
}

func (pf *peerFlags) psk() ([]byte, error) {
	if pf.pskFile == "" {
		return nil, nil
	}
	b, err := readLimited(pf.pskFile, 1024)
	if err != nil {
		return nil, fmt.Errorf("read --psk-file: %w", err)
	}
	k, err := hex.DecodeString(strings.TrimSpace(string(b)))
	if err != nil || len(k) != 32 {
		return nil, fmt.Errorf("--psk-file must hold 64 hex characters (32 bytes)")
	}
	return k, nil
}

// ready prints the contract's ready line.
func ready(g *globals, id string, addrs []string, httpURL string) {
	line := fmt.Sprintf("ready peer=%s addrs=%s", id, strings.Join(addrs, ","))
	if httpURL != "" {
		line += " http=" + httpURL
	}
	line += " version=" + version.Short()
	fmt.Fprintln(g.stdout, line)
}

// closers close in order and report every error.
type closers []interface{ Close() error }

func (cs closers) Close() error {
	var errs []error
	for _, c := range cs {
		errs = append(errs, c.Close())
	}
	return errors.Join(errs...)
}

// tlsReloader is a peer whose HTTPS certificate can be read again.
type tlsReloader interface{ ReloadTLS() error }

// serve waits for SIGINT/SIGTERM, then closes. A peer with HTTPS reads its
// certificate and key again on SIGHUP.
func serve(ctx context.Context, g *globals, closer interface{ Close() error }) error {
	if r, ok := closer.(tlsReloader); ok {
		hup := make(chan os.Signal, 1)
		signal.Notify(hup, syscall.SIGHUP)
		defer signal.Stop(hup)
		for ctx.Err() == nil {
			select {
			case <-ctx.Done():
			case <-hup:
				if err := r.ReloadTLS(); err != nil {
					g.logger().Error("SIGHUP: the TLS certificate was not reloaded; the previous one stays in use", "err", err)
				} else {
					g.logger().Info("SIGHUP: TLS certificate reloaded (if HTTPS is on)")
				}
			}
		}
	}
	<-ctx.Done()
	g.logger().Info("shutting down")
	if err := closer.Close(); err != nil {
		return fmt.Errorf("shutdown: %w", err)
	}
	return nil
}

// peerFlagNames names the flag of each config field the peer commands share.
var peerFlagNames = map[string]string{"DataDir": "--data", "Network": "--network", "Listen": "--listen", "Bootstrap": "--bootstrap", "PSK": "--psk-file"}

// flagErrors rewrites a config's field errors (internal/config) as a usage
// error naming the flags; other errors pass unchanged.
func flagErrors(err error, names map[string]string) error {
	fields := config.Fields(err)
	if len(fields) == 0 {
		return err
	}
	msgs := make([]string, 0, len(fields))
	for _, f := range fields {
		name, ok := names[f.Field]
		if !ok {
			name = peerFlagNames[f.Field]
		}
		if name == "" {
			name = f.Field
		}
		msgs = append(msgs, name+" "+f.Problem)
	}
	return usageError{errors.New(strings.Join(msgs, "; "))}
}

func networkCmd(g *globals) *cobra.Command {
	var pf peerFlags
	cfg := network.DefaultConfig()
	c := &cobra.Command{
		Use:   "network",
		Short: "run a network peer: bootstrap address, DHT server, HTTP search and gateway directory",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			psk, err := pf.prepare()
			if err != nil {
				return err
			}
			cfg := cfg
			cfg.DataDir, cfg.Network, cfg.Bootstrap, cfg.PSK, cfg.Logger, cfg.Reach = pf.data, pf.network, pf.bootstrap, psk, g.logger(), pf.reach
			if len(pf.listen) > 0 {
				cfg.Listen = pf.listen
			}
			if err := cfg.Validate(); err != nil {
				return flagErrors(err, map[string]string{"HTTPAddr": "--http", "PerGateway": "--gateway-timeout", "MaxSearches": "--max-searches"})
			}
			n, err := network.Start(cmd.Context(), cfg)
			if err != nil {
				return err
			}
			ready(g, n.ID(), n.Addrs(), n.HTTPURL())
			return serve(cmd.Context(), g, n)
		},
	}
	pf.add(c, network.DefaultListen+" and "+network.DefaultListenQUIC)
	c.Flags().BoolVar(&pf.reach.Relay, "relay", true, "serve circuit relay v2 reservations to this network's peers, so that gateways behind NAT can be reached (and hole punching coordinated)")
	c.Flags().IntVar(&pf.reach.RelayMaxReservations, "relay-max-reservations", 128, "relay reservations held at once")
	c.Flags().StringVar(&cfg.HTTPAddr, "http", cfg.HTTPAddr, "HTTP bind address for status, search (GET /api/v1/search) and the gateway directory (GET /api/v1/gateways), e.g. 127.0.0.1:8401; off when empty")
	c.Flags().DurationVar(&cfg.PerGateway, "gateway-timeout", cfg.PerGateway, "how long a search waits for each gateway")
	c.Flags().IntVar(&cfg.MaxSearches, "max-searches", cfg.MaxSearches, "searches served at once over HTTP; more wait")
	addTLSFlags(c, &cfg.TLSCert, &cfg.TLSKey)
	return c
}

func gatewayCmd(g *globals) *cobra.Command {
	var pf peerFlags
	cfg := gateway.DefaultConfig()
	var auditLog, maxUpload string
	c := &cobra.Command{
		Use:   "gateway",
		Short: "run a data owner's gateway",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			psk, err := pf.prepare()
			if err != nil {
				return err
			}
			cfg := cfg
			if auditLog != "" {
				w, from, closeLog, err := openAuditLog(auditLog, g.stdout)
				if err != nil {
					return err
				}
				defer closeLog()
				cfg.AuditLog, cfg.AuditLogFrom = w, from
			}
			cfg.DataDir, cfg.Network, cfg.Listen, cfg.Bootstrap = pf.data, pf.network, pf.listen, pf.bootstrap
			cfg.PSK, cfg.Logger, cfg.Reach = psk, g.logger(), pf.reach
			if maxUpload != "" {
				if cfg.MaxUploadSize, err = node.ParseBytes(maxUpload); err != nil {
					return usagef("--max-upload-size: %v", err)
				}
			}
			if !cmd.Flags().Changed("pgpass") {
				cfg.PGPassFile = defaultPGPass()
			}
			if err := cfg.Validate(); err != nil {
				return flagErrors(err, map[string]string{"HTTPAddr": "--http", "MetricsAddr": "--metrics-http", "MaxUploadSize": "--max-upload-size", "UploadTTL": "--upload-ttl", "Name": "--name", "CORSOrigins": "--cors-origin",
					"Lease": "--lease", "MaxAttempts": "--max-attempts", "AttemptTimeout": "--attempt-timeout", "JobTimeout": "--job-timeout",
					"MaxWorkers": "--max-workers", "MaxRounds": "--max-rounds", "WitnessInterval": "--witness-interval",
					"SourceTimeout": "--source-timeout", "SourceDirs": "--source-dir", "FederationTimeout": "--federation-timeout"})
			}
			gw, err := gateway.Start(cmd.Context(), cfg)
			if err != nil {
				return err
			}
			if tok := gw.SetupToken(); tok != "" && gw.HTTPURL() != "" {
				// First run, as Jupyter and Grafana do: whoever set up the
				// gateway reads the token here; a web page elsewhere cannot.
				fmt.Fprintf(g.stdout, "setup-token %s (first run: create the Owner with it on %s/admin/ or POST /api/v1/setup {\"setup_token\": ...})\n", tok, gw.HTTPURL())
			}
			ready(g, gw.ID(), gw.Addrs(), gw.HTTPURL())
			return serve(cmd.Context(), g, gw)
		},
	}
	pf.add(c, p2p.DefaultListen+" and "+p2p.DefaultListenQUIC)
	c.Flags().StringVar(&cfg.HTTPAddr, "http", cfg.HTTPAddr, "HTTP bind address of the admin API and web UI")
	c.Flags().StringVar(&cfg.MetricsAddr, "metrics-http", "", "serve GET /metrics here (plain HTTP), and no longer on --http: an address only operators reach (its series time every job)")
	c.Flags().StringVar(&cfg.Name, "name", cfg.Name, "display name shown to data scientists")
	addTLSFlags(c, &cfg.TLSCert, &cfg.TLSKey)
	c.Flags().StringArrayVar(&cfg.HTTPHosts, "http-host", nil, "a host name the HTTP API answers to (besides IP addresses, localhost and the --http host), e.g. gw.example.org behind a proxy; repeatable")
	c.Flags().StringSliceVar(&cfg.CORSOrigins, "cors-origin", nil, "origins (scheme://host[:port]) whose browser pages may call the HTTP API, e.g. where the admin app is hosted separately; repeatable")
	c.Flags().DurationVar(&cfg.Lease, "lease", cfg.Lease, "how long a node keeps a job without a heartbeat")
	c.Flags().IntVar(&cfg.MaxAttempts, "max-attempts", cfg.MaxAttempts, "attempts a job gets before it fails (its retry budget)")
	c.Flags().DurationVar(&cfg.AttemptTimeout, "attempt-timeout", cfg.AttemptTimeout, "longest one attempt may run")
	c.Flags().DurationVar(&cfg.JobTimeout, "job-timeout", cfg.JobTimeout, "longest a job may take, queueing included")
	c.Flags().IntVar(&cfg.MaxWorkers, "max-workers", cfg.MaxWorkers, "largest train.workers a data-parallel plan may ask for")
	c.Flags().IntVar(&cfg.MaxRounds, "max-rounds", cfg.MaxRounds, "largest train.rounds a data-parallel plan may ask for")
	c.Flags().DurationVar(&cfg.FederationTimeout, "federation-timeout", cfg.FederationTimeout, "a federation's part here expires (its jobs cancelled, its epsilon refunded, or charged once an update left) when its coordinator is not heard from for this long")
	c.Flags().DurationVar(&cfg.WitnessInterval, "witness-interval", cfg.WitnessInterval, "how often the audit chain's head is published, signed, to the --bootstrap network peers that witness it")
	c.Flags().StringVar(&maxUpload, "max-upload-size", "1TiB", "largest resumable upload (fedgrid admin datasets upload); one the free disk space cannot hold is refused anyway")
	c.Flags().DurationVar(&cfg.UploadTTL, "upload-ttl", cfg.UploadTTL, "how long an unfinished or finished upload session is kept untouched before its bytes are deleted")
	c.Flags().StringVar(&auditLog, "audit-log", "", "append every audit entry as a JSON line to FILE (resuming after its last line), or - for stdout (the whole log at each start)")
	c.Flags().StringArrayVar(&cfg.SourceDirs, "source-dir", nil, "a directory (absolute path) whose CSV or Parquet files may be registered as dataset sources (fedgrid admin datasets register file:///DIR/FILE.csv); files elsewhere, or reached through a link that leads out, are refused; repeatable; none: no file sources")
	c.Flags().StringVar(&cfg.PGPassFile, "pgpass", "", "password file of PostgreSQL dataset sources (libpq's .pgpass format: HOST:PORT:DATABASE:USER:PASSWORD lines, mode 0600), read at each snapshot (default $PGPASSFILE, else ~/.pgpass)")
	c.Flags().DurationVar(&cfg.SourceTimeout, "source-timeout", cfg.SourceTimeout, "longest a dataset source snapshot's statement may run on the database")
	return c
}

// defaultPGPass is libpq's password file: $PGPASSFILE, else ~/.pgpass.
func defaultPGPass() string {
	if p := os.Getenv("PGPASSFILE"); p != "" {
		return p
	}
	if home, err := os.UserHomeDir(); err == nil {
		return filepath.Join(home, ".pgpass")
	}
	return ""
}

func addTLSFlags(c *cobra.Command, cert, key *string) {
	c.Flags().StringVar(cert, "tls-cert", "", "PEM certificate (chain) file: serve HTTP over HTTPS only, with HSTS; read again on SIGHUP")
	c.Flags().StringVar(key, "tls-key", "", "PEM private key file of --tls-cert")
}

// releaseStartupPages gives back the pages of the binary that only the
// start-up touched (package initialisers, libp2p's construction): a node
// runs for months, and the file pages its start-up mapped are most of its
// resident memory otherwise (internal/memtrim, docs/INTERNALS.md "A node's
// memory"). Pages it uses again come back on their next access.
func releaseStartupPages(log *slog.Logger) {
	r, err := memtrim.ReleaseExecutable()
	switch {
	case errors.Is(err, errors.ErrUnsupported):
	case err != nil:
		log.Warn("start-up pages of the binary not released", "err", err)
	default:
		log.Info("start-up pages of the binary released", "resident_mib", r.Resident>>20, "mappings", r.Mappings, "skipped", r.Skipped)
	}
}

func nodeCmd(g *globals) *cobra.Command {
	var pf peerFlags
	cfg := node.DefaultConfig()
	var engine, maxMemory, cacheSize, metricsAddr string
	c := &cobra.Command{
		Use:   "node",
		Short: "run a worker node enrolled by a gateway",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			psk, err := pf.prepare()
			if err != nil {
				return err
			}
			cfg := cfg
			cfg.DataDir, cfg.Network, cfg.Listen, cfg.Bootstrap = pf.data, pf.network, pf.listen, pf.bootstrap
			cfg.PSK, cfg.Logger, cfg.Engine, cfg.Reach = psk, g.logger(), plan.Engine(engine), pf.reach
			if err := cfg.Validate(); err != nil {
				return flagErrors(err, map[string]string{"Gateway": "--gateway", "JoinToken": "--join-token", "Slots": "--slots", "Engine": "--engine"})
			}
			if maxMemory != "" {
				if cfg.MaxMemory, err = node.ParseBytes(maxMemory); err != nil {
					return usagef("--max-memory: %v", err)
				}
				// The Go runtime collects garbage before its memory passes
				// the limit (unless GOMEMLIMIT says otherwise), so that
				// the process stays within what it was given.
				if os.Getenv("GOMEMLIMIT") == "" {
					debug.SetMemoryLimit(node.RuntimeMemoryLimit(cfg.MaxMemory))
				}
			}
			if cacheSize != "" {
				if cfg.CacheSize, err = node.ParseBytes(cacheSize); err != nil {
					return usagef("--cache-size: %v", err)
				}
			}
			if metricsAddr != "" {
				cfg.Metrics = obs.NewRegistry("node", p2p.Version)
			}
			n, err := node.Start(cmd.Context(), cfg)
			if err != nil {
				return err
			}
			releaseStartupPages(cfg.Logger)
			if metricsAddr == "" {
				ready(g, n.ID().String(), n.Addrs(), "")
				return serve(cmd.Context(), g, n)
			}
			ms, err := obs.Serve(metricsAddr, cfg.Metrics)
			if err != nil {
				_ = n.Close()
				return fmt.Errorf("--metrics %s: %w", metricsAddr, err)
			}
			ready(g, n.ID().String(), n.Addrs(), ms.URL())
			return serve(cmd.Context(), g, closers{n, ms})
		},
	}
	pf.add(c, p2p.DefaultListen+" and "+p2p.DefaultListenQUIC)
	c.Flags().StringVar(&cfg.Gateway, "gateway", "", "the enrolling gateway's multiaddr with /p2p/")
	c.Flags().StringVar(&cfg.JoinToken, "join-token", "", "single-use join token from the gateway's admin (not needed once enrolled)")
	c.Flags().IntVar(&cfg.Slots, "slots", cfg.Slots, "jobs this node runs at once")
	c.Flags().StringVar(&engine, "engine", string(cfg.Engine), "gradient engine for the jobs it trains: native (fast) or gorgonia (autodiff reference)")
	c.Flags().StringVar(&maxMemory, "max-memory", "", "memory this node's jobs may use together, e.g. 4GiB (default: the cgroup limit or the physical memory); each slot gets an equal share, the node claims no job that needs more and streams the rows of a job that cannot hold them; also the Go runtime's memory limit unless GOMEMLIMIT is set")
	c.Flags().StringVar(&cacheSize, "cache-size", "", "disk the shard cache (DATA/shards: the rows of past jobs, for later jobs on the same dataset version and shard) may use, e.g. 20GiB (default 8GiB); the least recently used shards go first. A streamed job keeps its preprocessed rows there too, in a scratch file of at most this size, for the epochs after the first")
	c.Flags().StringVar(&metricsAddr, "metrics", "", "serve Prometheus metrics at http://ADDR/metrics (HOST:PORT; port 0 picks one, shown as http= in the ready line)")
	return c
}
