package gateway_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/fedgrid/fedgrid/client"
	"github.com/fedgrid/fedgrid/dataset"
	"github.com/fedgrid/fedgrid/gateway"
	"github.com/fedgrid/fedgrid/gateway/store"
	"github.com/fedgrid/fedgrid/internal/testcluster"
	"github.com/fedgrid/fedgrid/internal/wait"
	"github.com/fedgrid/fedgrid/network"
	"github.com/fedgrid/fedgrid/p2p"
)

// searchDS is one dataset of the search cluster, as the test knows it.
type searchDS struct {
	gw          int
	name, desc  string
	tags        []string
	cols        []string
	id          string
	visibility  string
	deleted     bool
	gatewayGone bool
}

func putCSV(t *testing.T, st *store.Store, d *searchDS, rows int) {
	t.Helper()
	var b bytes.Buffer
	b.WriteString(strings.Join(d.cols, ",") + "\n")
	for r := range rows {
		for c := range d.cols {
			if c > 0 {
				b.WriteByte(',')
			}
			fmt.Fprintf(&b, "%d", (r*7+c*3)%50)
		}
		b.WriteByte('\n')
	}
	tbl, err := dataset.ReadCSV(bytes.NewReader(b.Bytes()), dataset.Limits{})
	if err != nil {
		t.Fatal(err)
	}
	sd := &store.Dataset{Name: d.name, Description: d.desc, Tags: d.tags, Visibility: d.visibility, Columns: tbl.Columns(), Rows: tbl.NumRows()}
	if err := st.PutDataset(sd, b.Bytes()); err != nil {
		t.Fatal(err)
	}
	d.id = sd.ID
}

// TestNetworkSearch is the search acceptance: five gateways with three
// overlapping tags, answers checked exactly for every kind of query, over
// the Go client and the network peer's HTTP; a deleted dataset and a
// stopped gateway drop out; a gateway of another network never appears;
// after the network peer restarts search works again without touching the
// gateways, and the restarted peer holds their records again.
func TestNetworkSearch(t *testing.T) {
	if testing.Short() {
		t.Skip("multi-peer cluster")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	const netName = "srch"
	netDir := t.TempDir()
	tc := testcluster.Start(t, ctx, testcluster.Options{Network: netName,
		Net: func(cfg *network.Config) {
			cfg.DataDir, cfg.HTTPAddr, cfg.PerGateway = netDir, "127.0.0.1:0", 3*time.Second
		},
		Gateway: func(cfg *gateway.Config) { cfg.Name = "gw0" },
	})
	nw := tc.Net

	dss := []*searchDS{
		{gw: 0, name: "Diabetes cohort", desc: "Glucose and insulin of adults", tags: []string{"health"}, cols: []string{"glucose", "insulin", "age"}},
		{gw: 0, name: "Gene panel", desc: "SNP counts", tags: []string{"health", "genomics"}, cols: []string{"snp1", "snp2"}},
		{gw: 1, name: "Retina scans", desc: "Image features of retina scans", tags: []string{"imaging", "health"}, cols: []string{"f1", "f2", "age"}},
		{gw: 1, name: "Tumour sequencing", desc: "Somatic variants", tags: []string{"genomics"}, cols: []string{"gene", "count"}},
		{gw: 2, name: "Chest X-ray", desc: "Radiology features", tags: []string{"imaging"}, cols: []string{"f1", "label"}},
		{gw: 3, name: "Biobank", desc: "Genotypes, images and glucose", tags: []string{"genomics", "imaging", "health"}, cols: []string{"glucose", "snp1", "f1"}},
		{gw: 3, name: "Untagged survey", desc: "A questionnaire", cols: []string{"q1", "q2"}},
		{gw: 4, name: "Mammography", desc: "Breast imaging features", tags: []string{"imaging"}, cols: []string{"f1", "f2"}},
		{gw: 4, name: "Insulin trial", desc: "Insulin dosing trial", tags: []string{"health"}, cols: []string{"insulin", "dose"}},
	}
	gws := []*gateway.Gateway{tc.GW}
	for i := 1; i < 5; i++ {
		gws = append(gws, tc.StartGateway(t, ctx, func(cfg *gateway.Config) { cfg.Name = fmt.Sprintf("gw%d", i) }))
	}
	for i, d := range dss {
		d.visibility = []string{store.VisibilityPublic, store.VisibilityPrivate}[i%2]
		putCSV(t, gws[d.gw].Store(), d, 60)
	}
	// A gateway of another network, with the same tags, bootstrapped both
	// from its own network peer and (by mistake) from ours.
	other, err := network.Start(ctx, network.Config{DataDir: t.TempDir(), Network: "elsewhere", Listen: []string{loopback}})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = other.Close() }()
	ogw, err := gateway.Start(ctx, gateway.Config{DataDir: t.TempDir(), Network: "elsewhere", Listen: []string{loopback}, Bootstrap: append(other.Addrs(), nw.Addrs()...), NoHTTP: true, Name: "intruder"})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = ogw.Close() }()
	intruder := &searchDS{gw: -1, name: "Biobank", desc: "Genotypes, images and glucose", tags: []string{"genomics", "imaging", "health"}, cols: []string{"glucose", "snp1", "f1"}, visibility: store.VisibilityPublic}
	putCSV(t, ogw.Store(), intruder, 20)

	// Every dataset becomes "provided" in the background.
	took := wait.For(t, 30*time.Second, "indexing", func() error {
		for _, d := range dss {
			if s := gws[d.gw].IndexState(d.id); s.State != gateway.IndexProvided || s.At.IsZero() {
				return fmt.Errorf("%s on gw%d: %+v", d.name, d.gw, s)
			}
		}
		return nil
	})
	t.Logf("all datasets indexed in %s", took)
	if s := gws[0].IndexState("no-such-dataset"); s.State != gateway.IndexUnknown {
		t.Fatalf("index state of a missing dataset: %+v", s)
	}

	cl, err := client.New(ctx, client.Config{Network: netName, Bootstrap: nw.Addrs(), PerGateway: 3 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()

	refOf := func(d *searchDS) string { return gws[d.gw].ID() + "/" + d.id }
	// expect is the test's own reading of a query.
	expect := func(q client.Query) []string {
		var out []string
		for _, d := range dss {
			if d.deleted || d.gatewayGone {
				continue
			}
			hits := 0
			for _, t := range q.Tags {
				if slices.Contains(d.tags, t) {
					hits++
				}
			}
			if len(q.Tags) > 0 && (q.Any && hits == 0 || !q.Any && hits < len(q.Tags)) {
				continue
			}
			ok := true
			for _, w := range strings.Fields(strings.ToLower(q.Text)) {
				ok = ok && strings.Contains(strings.ToLower(d.name+" "+d.desc), w)
			}
			for _, c := range q.Columns {
				ok = ok && slices.Contains(d.cols, c)
			}
			if ok {
				out = append(out, refOf(d))
			}
		}
		sort.Strings(out)
		return out
	}
	refs := func(res []client.Result) []string {
		out := make([]string, 0, len(res))
		for _, r := range res {
			out = append(out, r.Ref)
		}
		sort.Strings(out)
		return out
	}
	queries := []client.Query{
		{},
		{Tags: []string{"health"}},
		{Tags: []string{"genomics"}},
		{Tags: []string{"imaging"}},
		{Tags: []string{"health", "genomics"}},
		{Tags: []string{"HEALTH", "imaging"}},
		{Tags: []string{"genomics", "imaging", "health"}},
		{Tags: []string{"genomics", "imaging"}, Any: true},
		{Tags: []string{"health", "imaging", "genomics"}, Any: true},
		{Tags: []string{"nosuchtag"}},
		{Tags: []string{"health", "nosuchtag"}, Any: true},
		{Text: "glucose"},
		{Text: "insulin TRIAL"},
		{Tags: []string{"imaging"}, Text: "features"},
		{Columns: []string{"f1"}},
		{Columns: []string{"f1", "f2"}, Tags: []string{"imaging"}},
		{Columns: []string{"insulin"}, Tags: []string{"health"}, Text: "insulin"},
	}
	for i := range queries {
		queries[i].Tags = lower(queries[i].Tags)
	}
	checkAll := func() error {
		for _, q := range queries {
			res, err := cl.SearchQuery(ctx, q, nil)
			if err != nil {
				return fmt.Errorf("%+v: %v", q, err)
			}
			if got, want := refs(res), expect(q); !slices.Equal(got, want) {
				return fmt.Errorf("query %+v: got %v, want %v", q, got, want)
			}
			for _, r := range res {
				if r.GatewayName == "intruder" || r.Gateway == ogw.ID() {
					return fmt.Errorf("a gateway of another network answered: %+v", r)
				}
			}
		}
		return nil
	}
	if err := checkAll(); err != nil {
		t.Fatal(err)
	}
	if want := 2 + 2; len(expect(queries[7])) < want {
		t.Fatalf("the test's own data lost its overlap: %v", expect(queries[7]))
	}

	// Answers carry what a plan needs, and a synthetic preview.
	res, err := cl.SearchQuery(ctx, client.Query{Tags: []string{"genomics", "imaging", "health"}}, nil)
	if err != nil || len(res) != 1 {
		t.Fatalf("biobank: %v %+v", err, res)
	}
	r := res[0]
	if r.GatewayName != "gw3" || r.Dataset.Name != "Biobank" || r.Dataset.Rows != 60 || len(r.Addrs) == 0 || r.Dataset.Visibility != dss[5].visibility ||
		len(r.Dataset.Columns) != 3 || r.Dataset.Columns[0].Name != "glucose" || r.Dataset.Columns[0].Type != dataset.TypeNumber ||
		r.Dataset.Preview == nil || !r.Dataset.Preview.Synthetic || len(r.Dataset.Preview.Rows) != gateway.DefaultPreviewRows {
		t.Fatalf("biobank entry: %+v", r)
	}
	if _, err := p2p.ParseAddrInfos(r.Addrs); err != nil {
		t.Fatalf("addresses: %v", err)
	}

	// The network peer's HTTP search and directory agree.
	httpSearch := func(base string, q url.Values) ([]string, error) {
		var body struct {
			Results []client.Result `json:"results"`
		}
		if err := getJSON(ctx, base+"/api/v1/search?"+q.Encode(), &body); err != nil {
			return nil, err
		}
		return refs(body.Results), nil
	}
	for _, c := range []struct {
		q     url.Values
		query client.Query
	}{
		{url.Values{"tag": {"health"}}, client.Query{Tags: []string{"health"}}},
		{url.Values{"tag": {"genomics,imaging"}, "match": {"any"}}, client.Query{Tags: []string{"genomics", "imaging"}, Any: true}},
		{url.Values{"text": {"glucose"}, "column": {"glucose"}}, client.Query{Text: "glucose", Columns: []string{"glucose"}}},
		{url.Values{}, client.Query{}},
	} {
		got, err := httpSearch(nw.HTTPURL(), c.q)
		if err != nil {
			t.Fatal(err)
		}
		if want := expect(c.query); !slices.Equal(got, want) {
			t.Fatalf("HTTP search %v: got %v, want %v", c.q, got, want)
		}
	}
	if err := getJSON(ctx, nw.HTTPURL()+"/api/v1/search?match=some", nil); err == nil || !strings.Contains(err.Error(), "400") {
		t.Fatalf("bad match: %v", err)
	}
	directory := func() ([]string, error) {
		var body struct {
			Gateways []client.Gateway `json:"gateways"`
		}
		if err := getJSON(ctx, nw.HTTPURL()+"/api/v1/gateways", &body); err != nil {
			return nil, err
		}
		var names []string
		for _, g := range body.Gateways {
			names = append(names, fmt.Sprintf("%s:%d", g.Name, g.Datasets))
		}
		return names, nil
	}
	if got, err := directory(); err != nil || !slices.Equal(got, []string{"gw0:2", "gw1:2", "gw2:1", "gw3:2", "gw4:2"}) {
		t.Fatalf("directory: %v %v", got, err)
	}

	// A deleted dataset drops out of the catalog, and a tag no dataset of
	// its gateway carries any more is no longer provided by it.
	chest := dss[4]
	if err := gws[chest.gw].Store().DeleteDataset(chest.id); err != nil {
		t.Fatal(err)
	}
	chest.deleted = true
	if s := gws[chest.gw].IndexState(chest.id); s.State != gateway.IndexUnknown {
		t.Fatalf("deleted dataset's index state: %+v", s)
	}
	if err := checkAll(); err != nil {
		t.Fatalf("after delete: %v", err)
	}

	// A stopped gateway disappears from the results.
	stopped := time.Now()
	if err := gws[4].Close(); err != nil {
		t.Fatal(err)
	}
	for _, d := range dss {
		if d.gw == 4 {
			d.gatewayGone = true
		}
	}
	took = wait.For(t, 30*time.Second, "stopped gateway gone", checkAll)
	t.Logf("stopped gateway gone from every search %s after it stopped (checked in %s)", time.Since(stopped), took)
	if got, err := directory(); err != nil || !slices.Equal(got, []string{"gw0:2", "gw1:2", "gw2:0", "gw3:2"}) {
		t.Fatalf("directory after a stop: %v %v", got, err)
	}

	// The network peer restarts with the same identity and port.
	listen, _, _ := strings.Cut(nw.Addrs()[0], "/p2p/")
	oldID := nw.ID()
	if err := nw.Close(); err != nil {
		t.Fatal(err)
	}
	restarted := time.Now()
	nw, err = network.Start(ctx, network.Config{DataDir: netDir, Network: netName, Listen: []string{listen}, HTTPAddr: "127.0.0.1:0", PerGateway: 3 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if nw.ID() != oldID {
		t.Fatalf("identity changed on restart")
	}
	live := []*gateway.Gateway{gws[0], gws[1], gws[2], gws[3]}
	// The gateways notice and put their records back into the restarted
	// peer's (empty) provider store; no gateway is restarted.
	tookRecords := wait.For(t, 30*time.Second, "records back on the restarted network peer", func() error {
		provs, err := nw.Peer().DHT.ProviderStore().GetProviders(ctx, p2p.GatewaysKey(netName).Hash())
		if err != nil {
			return err
		}
		have := map[peer.ID]bool{}
		for _, p := range provs {
			have[p.ID] = true
		}
		for _, g := range live {
			if !have[g.Peer().ID()] {
				return fmt.Errorf("%s not among %d providers", g.ID(), len(provs))
			}
		}
		return nil
	})
	// A fresh client that knows only the restarted peer, the old client, and
	// the peer's own HTTP search all work again.
	tookSearch := wait.For(t, 30*time.Second, "search after the network peer restarted", func() error {
		fresh, err := client.New(ctx, client.Config{Network: netName, Bootstrap: nw.Addrs(), PerGateway: 3 * time.Second})
		if err != nil {
			return err
		}
		defer fresh.Close()
		for _, c := range []*client.Client{fresh, cl} {
			for _, q := range queries {
				res, err := c.SearchQuery(ctx, q, nil)
				if err != nil {
					return err
				}
				if got, want := refs(res), expect(q); !slices.Equal(got, want) {
					return fmt.Errorf("query %+v: got %v, want %v", q, got, want)
				}
			}
		}
		got, err := httpSearch(nw.HTTPURL(), url.Values{"tag": {"health"}})
		if err != nil {
			return err
		}
		if want := expect(client.Query{Tags: []string{"health"}}); !slices.Equal(got, want) {
			return fmt.Errorf("HTTP: got %v, want %v", got, want)
		}
		return nil
	})
	t.Logf("network peer restarted: records back after %s, every search right after %s (%s since the restart)", tookRecords, tookRecords+tookSearch, time.Since(restarted))
	_ = nw.Close()
}

func lower(tags []string) []string {
	out := make([]string, len(tags))
	for i, t := range tags {
		out[i] = strings.ToLower(t)
	}
	return out
}

var noKeepAlive = &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}

// getJSON GETs url and decodes a 200 answer into v; another status is an error.
func getJSON(ctx context.Context, u string, v any) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return err
	}
	resp, err := noKeepAlive.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		var e map[string]any
		_ = json.NewDecoder(resp.Body).Decode(&e)
		return fmt.Errorf("%s: status %d: %v", u, resp.StatusCode, e)
	}
	if v == nil {
		return nil
	}
	return json.NewDecoder(resp.Body).Decode(v)
}
