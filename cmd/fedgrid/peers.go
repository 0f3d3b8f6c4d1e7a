package main

import (
	"context"
	"encoding/hex"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/fedgrid/fedgrid/gateway"
	"github.com/fedgrid/fedgrid/network"
	"github.com/fedgrid/fedgrid/node"
	"github.com/fedgrid/fedgrid/p2p"
)

type peerFlags struct {
	data      string
	network   string
	listen    []string
	bootstrap []string
	pskFile   string
}

func (pf *peerFlags) add(c *cobra.Command, defaultListen string) {
	c.Flags().StringVar(&pf.data, "data", "", "data directory (identity, state)")
	c.Flags().StringVar(&pf.network, "network", p2p.DefaultNetwork, "network name: the DHT namespace and topics")
	c.Flags().StringArrayVar(&pf.listen, "listen", nil, "listen multiaddr, repeatable (default "+defaultListen+")")
	c.Flags().StringArrayVar(&pf.bootstrap, "bootstrap", nil, "bootstrap peer multiaddr with /p2p/, repeatable")
	c.Flags().StringVar(&pf.pskFile, "psk-file", "", "private network key file (64 hex characters); peers without it cannot connect")
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
	fmt.Fprintln(g.stdout, line)
}

// serve waits for SIGINT/SIGTERM, then closes.
func serve(ctx context.Context, g *globals, closer interface{ Close() error }) error {
	<-ctx.Done()
	g.logger().Info("shutting down")
	if err := closer.Close(); err != nil {
		return fmt.Errorf("shutdown: %w", err)
	}
	return nil
}

func networkCmd(g *globals) *cobra.Command {
	var pf peerFlags
	var httpAddr string
	var perGateway time.Duration
	var maxSearches int
	c := &cobra.Command{
		Use:   "network",
		Short: "run a network peer: bootstrap address, DHT server, HTTP search and gateway directory",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			psk, err := pf.prepare()
			if err != nil {
				return err
			}
			if perGateway <= 0 || maxSearches < 1 {
				return usagef("--gateway-timeout must be positive and --max-searches at least 1")
			}
			n, err := network.Start(cmd.Context(), network.Config{DataDir: pf.data, Network: pf.network, Listen: pf.listen, Bootstrap: pf.bootstrap, HTTPAddr: httpAddr, PSK: psk, Logger: g.logger(),
				PerGateway: perGateway, MaxSearches: maxSearches})
			if err != nil {
				return err
			}
			ready(g, n.ID(), n.Addrs(), n.HTTPURL())
			return serve(cmd.Context(), g, n)
		},
	}
	pf.add(c, network.DefaultListen)
	c.Flags().StringVar(&httpAddr, "http", "", "HTTP bind address for status, search (GET /api/v1/search) and the gateway directory (GET /api/v1/gateways), e.g. 127.0.0.1:8401; off when empty")
	c.Flags().DurationVar(&perGateway, "gateway-timeout", 5*time.Second, "how long a search waits for each gateway")
	c.Flags().IntVar(&maxSearches, "max-searches", 8, "searches served at once over HTTP; more wait")
	return c
}

func gatewayCmd(g *globals) *cobra.Command {
	var pf peerFlags
	var httpAddr, name string
	var sched gateway.Config
	c := &cobra.Command{
		Use:   "gateway",
		Short: "run a data owner's gateway",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			psk, err := pf.prepare()
			if err != nil {
				return err
			}
			cfg := sched
			cfg.DataDir, cfg.Network, cfg.Listen, cfg.Bootstrap = pf.data, pf.network, pf.listen, pf.bootstrap
			cfg.HTTPAddr, cfg.Name, cfg.PSK, cfg.Logger = httpAddr, name, psk, g.logger()
			gw, err := gateway.Start(cmd.Context(), cfg)
			if err != nil {
				return err
			}
			ready(g, gw.ID(), gw.Addrs(), gw.HTTPURL())
			return serve(cmd.Context(), g, gw)
		},
	}
	pf.add(c, p2p.DefaultListen)
	c.Flags().StringVar(&httpAddr, "http", "127.0.0.1:8420", "HTTP bind address of the admin API and web UI")
	c.Flags().StringVar(&name, "name", "fedgrid gateway", "display name shown to data scientists")
	c.Flags().StringSliceVar(&sched.CORSOrigins, "cors-origin", nil, "origins (scheme://host[:port]) whose browser pages may call the HTTP API, e.g. where the admin app is hosted separately; repeatable")
	c.Flags().DurationVar(&sched.Lease, "lease", 15*time.Second, "how long a node keeps a job without a heartbeat")
	c.Flags().IntVar(&sched.MaxAttempts, "max-attempts", 3, "attempts a job gets before it fails (its retry budget)")
	c.Flags().DurationVar(&sched.AttemptTimeout, "attempt-timeout", time.Hour, "longest one attempt may run")
	c.Flags().DurationVar(&sched.JobTimeout, "job-timeout", 24*time.Hour, "longest a job may take, queueing included")
	return c
}

func nodeCmd(g *globals) *cobra.Command {
	var pf peerFlags
	var gw, token string
	var slots int
	c := &cobra.Command{
		Use:   "node",
		Short: "run a worker node enrolled by a gateway",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			psk, err := pf.prepare()
			if err != nil {
				return err
			}
			if gw == "" {
				return usagef("--gateway MULTIADDR is required")
			}
			if _, err := p2p.ParseAddrInfos([]string{gw}); err != nil {
				return usagef("--gateway: %v", err)
			}
			n, err := node.Start(cmd.Context(), node.Config{DataDir: pf.data, Network: pf.network, Listen: pf.listen, Bootstrap: pf.bootstrap, Gateway: gw, JoinToken: token, Slots: slots, PSK: psk, Logger: g.logger()})
			if err != nil {
				return err
			}
			ready(g, n.ID().String(), n.Addrs(), "")
			return serve(cmd.Context(), g, n)
		},
	}
	pf.add(c, p2p.DefaultListen)
	c.Flags().StringVar(&gw, "gateway", "", "the enrolling gateway's multiaddr with /p2p/")
	c.Flags().StringVar(&token, "join-token", "", "single-use join token from the gateway's admin (not needed once enrolled)")
	c.Flags().IntVar(&slots, "slots", 1, "jobs this node runs at once")
	return c
}
