package p2p

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"syscall"

	"github.com/libp2p/go-libp2p/core/network"
	ma "github.com/multiformats/go-multiaddr"
)

// PortsFile keeps, inside a peer's data directory, the ports it listened on
// for each listen address given without a port (port 0), so that a restart
// keeps them: firewall rules and other peers' address books stay valid.
const PortsFile = "ports.json"

// portsVersion is the schema version of PortsFile.
const portsVersion = 1

// maxPortsFile bounds what is read from PortsFile.
const maxPortsFile = 64 << 10

type portsRecord struct {
	Version int `json:"version"`
	// Ports maps a requested listen multiaddr with port 0 (as given) to the
	// port it got.
	Ports map[string]int `json:"ports"`
}

// ListenError is a listen address that could not be listened on.
type ListenError struct {
	Addr string // the multiaddr
	Port int    // its port (0 if none)
	Err  error
}

func (e *ListenError) Error() string {
	if errors.Is(e.Err, syscall.EADDRINUSE) {
		return fmt.Sprintf("cannot listen on %s: port %d is already in use (is another fedgrid peer running? choose another port with --listen)", e.Addr, e.Port)
	}
	if errors.Is(e.Err, syscall.EADDRNOTAVAIL) {
		return fmt.Sprintf("cannot listen on %s: no network interface has that address", e.Addr)
	}
	if errors.Is(e.Err, syscall.EACCES) {
		return fmt.Sprintf("cannot listen on %s: port %d needs privileges this process lacks", e.Addr, e.Port)
	}
	return fmt.Sprintf("cannot listen on %s: %v", e.Addr, e.Err)
}

func (e *ListenError) Unwrap() error { return e.Err }

// portOf returns the TCP or UDP port of m and the code of its component.
func portOf(m ma.Multiaddr) (port, code int) {
	for _, c := range m {
		switch c.Code() {
		case ma.P_TCP, ma.P_UDP:
			p, err := strconv.Atoi(c.Value())
			if err != nil {
				return 0, 0
			}
			return p, c.Code()
		}
	}
	return 0, 0
}

// withPort returns m with its TCP or UDP port replaced.
func withPort(m ma.Multiaddr, port int) (ma.Multiaddr, error) {
	out := make(ma.Multiaddr, 0, len(m))
	for _, c := range m {
		switch c.Code() {
		case ma.P_TCP, ma.P_UDP:
			nc, err := ma.NewComponent(c.Protocol().Name, strconv.Itoa(port))
			if err != nil {
				return nil, err
			}
			out = append(out, *nc)
		default:
			out = append(out, c)
		}
	}
	return out, nil
}

func readPorts(dataDir string) (portsRecord, error) {
	rec := portsRecord{Version: portsVersion, Ports: map[string]int{}}
	if dataDir == "" {
		return rec, nil
	}
	path := filepath.Join(dataDir, PortsFile)
	f, err := os.Open(path)
	if errors.Is(err, fs.ErrNotExist) {
		return rec, nil
	}
	if err != nil {
		return rec, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxPortsFile+1))
	if err != nil {
		return rec, err
	}
	if len(b) > maxPortsFile {
		return rec, fmt.Errorf("%s is larger than %d bytes", path, maxPortsFile)
	}
	var got portsRecord
	if err := json.Unmarshal(b, &got); err != nil {
		return rec, fmt.Errorf("%s is not a ports record: %v", path, err)
	}
	if got.Version != portsVersion {
		return rec, fmt.Errorf("%s has schema version %d; this fedgrid reads version %d", path, got.Version, portsVersion)
	}
	for k, v := range got.Ports {
		if v > 0 && v < 65536 {
			rec.Ports[k] = v
		}
	}
	return rec, nil
}

func writePorts(dataDir string, rec portsRecord) error {
	b, err := json.MarshalIndent(rec, "", "  ")
	if err != nil {
		return err
	}
	tmp := filepath.Join(dataDir, PortsFile+".tmp")
	if err := os.WriteFile(tmp, append(b, '\n'), 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, filepath.Join(dataDir, PortsFile))
}

// listenAll listens on every address, one at a time, so that each failure is
// known and named. An address with an explicit port must be had: a taken
// port is an error (TCP listeners do not share ports through SO_REUSEPORT).
// An address with port 0 gets the port it had at the last start, kept in
// dataDir; when that port is no longer free, the peer says so and takes a
// new one.
func listenAll(nw network.Network, dataDir string, addrs []ma.Multiaddr, log *slog.Logger) error {
	rec, err := readPorts(dataDir)
	if err != nil {
		log.Warn("the ports of the last start are unreadable; listening on new ports", "err", err)
	}
	changed := false
	explicit := map[string]bool{} // addresses asked for with their port
	for _, a := range addrs {
		if p, _ := portOf(a); p != 0 {
			explicit[a.String()] = true
		}
	}
	for _, want := range addrs {
		port, _ := portOf(want)
		key := want.String()
		kept := 0
		if port == 0 {
			kept = rec.Ports[key]
			// A port given explicitly in another address of this start wins.
			if m, err := withPort(want, kept); kept != 0 && (err != nil || explicit[m.String()]) {
				kept = 0
			}
		}
		before := listenSet(nw)
		err := errors.New("not tried")
		if kept != 0 {
			var m ma.Multiaddr
			if m, err = withPort(want, kept); err == nil {
				err = listenOne(nw, m)
			}
			if err != nil {
				log.Warn("cannot keep the port of the last start; listening on a new port (update firewall rules and peers that stored the old address)",
					"listen", key, "port", kept, "err", err)
			}
		}
		if kept == 0 || err != nil {
			if err := listenOne(nw, want); err != nil {
				return &ListenError{Addr: key, Port: port, Err: err}
			}
		}
		if port != 0 || dataDir == "" {
			continue
		}
		for _, got := range nw.ListenAddresses() {
			if before[got.String()] {
				continue
			}
			if p, _ := portOf(got); p != 0 && rec.Ports[key] != p {
				rec.Ports[key] = p
				changed = true
			}
			break
		}
	}
	if changed {
		if err := writePorts(dataDir, rec); err != nil {
			log.Warn("cannot keep the listen ports for the next start", "err", err)
		}
	}
	return nil
}

// listenOne listens on one address and keeps the cause of a failure (the
// swarm's Listen flattens it into text).
func listenOne(nw network.Network, m ma.Multiaddr) error {
	if s, ok := nw.(interface{ AddListenAddr(ma.Multiaddr) error }); ok {
		return s.AddListenAddr(m)
	}
	return nw.Listen(m)
}

func listenSet(nw network.Network) map[string]bool {
	s := map[string]bool{}
	for _, a := range nw.ListenAddresses() {
		s[a.String()] = true
	}
	return s
}
