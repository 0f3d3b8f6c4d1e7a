package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/fedgrid/fedgrid/internal/harness"
)

// documentedSeries is one row of docs/metrics.md's table of fedgrid series.
type documentedSeries struct {
	name, typ string
	labels    []string
	peers     []string
	// lazy: a labelled counter that appears once it counts ("appears after the first").
	lazy bool
}

// readMetricsDoc parses docs/metrics.md: the fedgrid series table and the
// prefixes of the library series.
func readMetricsDoc(t *testing.T) (map[string]documentedSeries, []string) {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", "docs", "metrics.md"))
	if err != nil {
		t.Fatal(err)
	}
	series := map[string]documentedSeries{}
	var prefixes []string
	cells := func(line string) []string {
		parts := strings.Split(strings.Trim(strings.TrimSpace(line), "|"), "|")
		for i := range parts {
			parts[i] = strings.TrimSpace(parts[i])
		}
		return parts
	}
	list := func(cell string) []string {
		if cell == "-" {
			return nil
		}
		var out []string
		for _, x := range strings.Split(cell, ",") {
			out = append(out, strings.Trim(strings.TrimSpace(x), "`"))
		}
		sort.Strings(out)
		return out
	}
	for _, line := range strings.Split(string(b), "\n") {
		c := cells(line)
		if len(c) < 2 || !strings.HasPrefix(c[0], "`") {
			continue
		}
		name := strings.Trim(c[0], "`")
		switch {
		case strings.HasSuffix(name, "_*"):
			prefixes = append(prefixes, strings.TrimSuffix(name, "*"))
		case strings.HasPrefix(name, "fedgrid_") && len(c) == 5:
			if _, dup := series[name]; dup {
				t.Fatalf("docs/metrics.md lists %s twice", name)
			}
			series[name] = documentedSeries{name: name, typ: c[1], labels: list(c[2]), peers: list(c[3]), lazy: strings.Contains(c[4], "appears after the first")}
		}
	}
	if len(series) == 0 || len(prefixes) == 0 {
		t.Fatalf("docs/metrics.md: found %d series and %d prefixes; is the table still there?", len(series), len(prefixes))
	}
	return series, prefixes
}

// scrape reads a peer's /metrics and parses it as Prometheus text.
func scrape(ctx context.Context, url string) (map[string]*dto.MetricFamily, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url+"/metrics", nil)
	if err != nil {
		return nil, err
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer res.Body.Close()
	if res.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET %s/metrics: HTTP %d", url, res.StatusCode)
	}
	if ct := res.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/plain") {
		return nil, fmt.Errorf("GET %s/metrics: Content-Type %q, want Prometheus text", url, ct)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	return p.TextToMetricFamilies(io.LimitReader(res.Body, 16<<20))
}

func typeName(t dto.MetricType) string {
	return strings.ToLower(t.String())
}

// TestMetricsDocumented (acceptance 3): the network peer (with --http), a
// gateway and a node (with --metrics) each serve /metrics as Prometheus
// text; the fedgrid series each serves are exactly the ones docs/metrics.md
// lists for that peer, with the documented type and labels; every other
// family belongs to a documented library prefix; libp2p's metrics are on.
func TestMetricsDocumented(t *testing.T) {
	h := newHarness(t)
	ctx := testContext(t, 2*time.Minute)
	network := networkName(t)
	doc, prefixes := readMetricsDoc(t)

	netPeer, err := h.StartNetwork(ctx, "network", harness.PeerOptions{Network: network, Extra: []string{"--http", harness.LoopbackHTTP, "--log-format", "json"}})
	if err != nil {
		t.Fatal(err)
	}
	opts := harness.PeerOptions{Network: network, Bootstrap: []string{netPeer.Addr()}}
	site, err := h.StartSite(ctx, "gateway", "Hospital A", "owner@a.example", "owner password a", opts)
	if err != nil {
		t.Fatal(err)
	}
	tok, err := site.Admin.JoinToken(ctx)
	if err != nil {
		t.Fatal(err)
	}
	nodeOpts := opts
	nodeOpts.Extra = []string{"--metrics", harness.LoopbackHTTP}
	nodeProc, err := h.StartNode(ctx, "node", site.Gateway.Addr(), tok, nodeOpts)
	if err != nil {
		t.Fatal(err)
	}
	if nodeProc.HTTP == "" {
		t.Fatal("the node's ready line has no http= with --metrics")
	}

	peers := map[string]string{"network": netPeer.HTTP, "gateway": site.Gateway.HTTP, "node": nodeProc.HTTP}
	for role, url := range peers {
		t.Run(role, func(t *testing.T) {
			// The first scrape is an HTTP request the second one counts.
			if _, err := scrape(ctx, url); err != nil {
				t.Fatal(err)
			}
			fams, err := scrape(ctx, url)
			if err != nil {
				t.Fatal(err)
			}
			libp2p := false
			for name, mf := range fams {
				libp2p = libp2p || strings.HasPrefix(name, "libp2p_")
				if !strings.HasPrefix(name, "fedgrid_") {
					if !slices.ContainsFunc(prefixes, func(p string) bool { return strings.HasPrefix(name, p) }) {
						t.Errorf("%s serves %s, which docs/metrics.md does not cover", role, name)
					}
					continue
				}
				d, ok := doc[name]
				if !ok || !slices.Contains(d.peers, role) {
					t.Errorf("%s serves %s, not listed for it in docs/metrics.md", role, name)
					continue
				}
				if typeName(mf.GetType()) != d.typ {
					t.Errorf("%s: %s is a %s, documented as a %s", role, name, typeName(mf.GetType()), d.typ)
				}
				for _, m := range mf.Metric {
					var got []string
					for _, lp := range m.Label {
						got = append(got, lp.GetName())
					}
					sort.Strings(got)
					if !slices.Equal(got, d.labels) {
						t.Errorf("%s: %s has labels %v, documented %v", role, name, got, d.labels)
						break
					}
				}
			}
			for name, d := range doc {
				if slices.Contains(d.peers, role) && fams[name] == nil && !d.lazy {
					t.Errorf("docs/metrics.md lists %s for the %s, which does not serve it", name, role)
				}
			}
			if !libp2p {
				t.Errorf("%s serves no libp2p_ series: libp2p's metrics are off", role)
			}
			bi := fams["fedgrid_build_info"]
			if bi == nil || len(bi.Metric) != 1 {
				t.Fatalf("%s: fedgrid_build_info %v", role, bi)
			}
			for _, lp := range bi.Metric[0].Label {
				if lp.GetName() == "role" && lp.GetValue() != role {
					t.Errorf("%s: build_info role=%s", role, lp.GetValue())
				}
			}
		})
	}
	// --log-format json: the network peer's stderr is one JSON object a line.
	for _, line := range strings.Split(strings.TrimSpace(string(netPeer.Stderr())), "\n") {
		if line != "" && !strings.HasPrefix(line, "{") {
			t.Errorf("network peer with --log-format json logged %q", line)
		}
	}
}

// TestGrafanaDashboardUsesDocumentedSeries: every fedgrid series the
// dashboard queries is one docs/metrics.md lists.
func TestGrafanaDashboardUsesDocumentedSeries(t *testing.T) {
	doc, _ := readMetricsDoc(t)
	b, err := os.ReadFile(filepath.Join("..", "deploy", "grafana", "fedgrid.json"))
	if err != nil {
		t.Fatal(err)
	}
	var dash struct {
		Panels []struct {
			Title   string `json:"title"`
			Targets []struct {
				Expr string `json:"expr"`
			} `json:"targets"`
		} `json:"panels"`
	}
	if err := json.Unmarshal(b, &dash); err != nil {
		t.Fatalf("deploy/grafana/fedgrid.json: %v", err)
	}
	name := regexp.MustCompile(`fedgrid_[a-z0-9_]+`)
	n := 0
	for _, p := range dash.Panels {
		if len(p.Targets) == 0 {
			t.Errorf("panel %q has no query", p.Title)
		}
		for _, tg := range p.Targets {
			for _, s := range name.FindAllString(tg.Expr, -1) {
				base := s
				for _, suf := range []string{"_bucket", "_sum", "_count"} {
					if _, ok := doc[base]; !ok {
						base = strings.TrimSuffix(base, suf)
					}
				}
				if _, ok := doc[base]; !ok {
					t.Errorf("panel %q queries %s, not in docs/metrics.md", p.Title, s)
				}
				n++
			}
		}
	}
	if n == 0 {
		t.Fatal("the dashboard queries no fedgrid series")
	}
}
