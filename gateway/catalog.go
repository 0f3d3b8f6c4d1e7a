package gateway

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"strconv"
	"strings"

	"github.com/fedgrid/fedgrid/crypto"
	"github.com/fedgrid/fedgrid/dataset"
	"github.com/fedgrid/fedgrid/dataset/colstore"
	"github.com/fedgrid/fedgrid/gateway/store"
	"github.com/fedgrid/fedgrid/p2p"
	"github.com/fedgrid/fedgrid/wire"
)

// --- catalog -------------------------------------------------------------

// Privacy cost of a private dataset's preview summary, spent once per
// dataset version (the noised marginals are stored and reused; every preview
// row is post-processing of them). The budget is split evenly over columns.
const (
	PreviewEpsilon = 1.0
	PreviewDelta   = 1e-6
	// DefaultPreviewRows is how many synthetic rows a catalog entry carries
	// unless the query asks otherwise.
	DefaultPreviewRows = 5
	// MaxSummaryDistinct bounds the distinct values of one text column
	// that a summary counts. A column with more (identifiers, free text)
	// is reported as high-cardinality, with no per-value marginal: for a
	// private dataset partition selection would keep few of its values
	// anyway, and the gateway's memory stays bounded (a few hundred KiB
	// per column) whatever the column holds.
	MaxSummaryDistinct = 4096
)

// summarySchema is the version of the stored summary record (the "schema"
// field of marginals). 1 (the field absent) is the record before
// high-cardinality columns; it opens as it is, with every column counted.
const summarySchema = 2

// suppressed stands in a preview cell for a column whose noised marginal
// kept nothing: too little data to show anything under the privacy budget.
const suppressed = "*"

func (g *Gateway) handleCatalog(_ context.Context, _ caller, req *wire.CatalogRequest) (*wire.CatalogResponse, error) {
	q, err := parseQuery(req)
	if err != nil {
		return nil, err
	}
	dss, err := g.store.Datasets()
	if err != nil {
		return nil, err
	}
	resp := &wire.CatalogResponse{Gateway: g.ID(), Name: g.cfg.Name, Datasets: []wire.CatalogEntry{}}
	for _, d := range dss {
		if !q.matches(d) {
			continue
		}
		e := wire.CatalogEntry{
			ID: d.ID, Name: d.Name, Description: d.Description, Tags: d.Tags,
			Visibility: d.Visibility, Rows: d.Rows, Columns: d.Columns,
		}
		if q.previewRows > 0 {
			m, err := g.summary(d)
			switch {
			case errors.Is(err, store.ErrNotFound):
				continue // deleted while we were answering
			case err != nil:
				g.log.Warn("catalog preview", "dataset", d.ID, "err", err)
			default:
				e.Preview = m.preview(q.previewRows, newRand())
			}
		}
		resp.Datasets = append(resp.Datasets, e)
	}
	models, err := g.store.HostedModels()
	if err != nil {
		return nil, err
	}
	for _, m := range models[:min(len(models), wire.MaxCatalogModels)] {
		resp.Models = append(resp.Models, wire.CatalogModel{ID: m.ID, Name: m.Name, Description: m.Description,
			Features: m.Plan.Features, Label: m.Plan.Label, Task: m.Plan.Task, Params: m.Params})
	}
	return resp, nil
}

// query is a validated catalog request.
type query struct {
	tags        []string
	any         bool
	words       []string
	columns     []string
	previewRows int
}

func parseQuery(req *wire.CatalogRequest) (*query, error) {
	bad := func(format string, args ...any) error { return p2p.Errorf(p2p.CodeBadRequest, format, args...) }
	if len(req.Tags) > wire.MaxQueryTags {
		return nil, bad("at most %d tags per query, got %d", wire.MaxQueryTags, len(req.Tags))
	}
	for _, t := range req.Tags {
		if len(t) > store.MaxTagLen {
			return nil, bad("tag longer than %d characters", store.MaxTagLen)
		}
	}
	if len(req.Columns) > wire.MaxQueryColumns {
		return nil, bad("at most %d columns per query, got %d", wire.MaxQueryColumns, len(req.Columns))
	}
	if len(req.Text) > wire.MaxQueryText {
		return nil, bad("search text longer than %d characters", wire.MaxQueryText)
	}
	if req.PreviewRows > wire.MaxPreviewRows {
		return nil, bad("at most %d preview rows, got %d", wire.MaxPreviewRows, req.PreviewRows)
	}
	q := &query{tags: store.NormalizeTags(req.Tags), words: strings.Fields(strings.ToLower(req.Text)), previewRows: req.PreviewRows}
	switch req.Match {
	case "", wire.MatchAll:
	case wire.MatchAny:
		q.any = true
	default:
		return nil, bad("match must be %q or %q, got %q", wire.MatchAll, wire.MatchAny, req.Match)
	}
	for _, c := range req.Columns {
		if c = strings.TrimSpace(c); c != "" {
			q.columns = append(q.columns, strings.ToLower(c))
		}
	}
	if q.previewRows == 0 {
		q.previewRows = DefaultPreviewRows
	}
	return q, nil
}

// matches: tags (all or any), every word of the text in the name or the
// description, every column name among the dataset's columns.
func (q *query) matches(d *store.Dataset) bool {
	if len(q.tags) > 0 {
		hit := 0
		for _, t := range q.tags {
			if slices.Contains(d.Tags, t) {
				hit++
			}
		}
		if (q.any && hit == 0) || (!q.any && hit < len(q.tags)) {
			return false
		}
	}
	if len(q.words) > 0 {
		hay := strings.ToLower(d.Name + "\n" + d.Description)
		for _, w := range q.words {
			if !strings.Contains(hay, w) {
				return false
			}
		}
	}
	for _, c := range q.columns {
		if !slices.ContainsFunc(d.Columns, func(col dataset.Column) bool { return strings.ToLower(col.Name) == c }) {
			return false
		}
	}
	return true
}

// --- synthetic preview -----------------------------------------------------

// marginals summarise a dataset column by column: a histogram of each
// numeric column over bins, counts of each categorical column's values.
// For a private dataset every count carries discrete Laplace noise and only
// data-independent bin edges or DP-selected categories appear.
type marginals struct {
	Schema  int         `json:"schema,omitempty"`
	Version string      `json:"version"`
	DP      bool        `json:"dp"`
	Epsilon float64     `json:"epsilon,omitempty"`
	Delta   float64     `json:"delta,omitempty"`
	Columns []columnSum `json:"columns"`
}

type columnSum struct {
	Name string `json:"name"`
	Type string `json:"type"`
	// Number: bin edges (len(Counts)+1), whether values are whole numbers,
	// and the decimals to print otherwise (-1 = three significant digits).
	Edges    []float64 `json:"edges,omitempty"`
	Integer  bool      `json:"integer,omitempty"`
	Decimals int       `json:"decimals,omitempty"`
	// Category: the values kept. HighCardinality: the column has more
	// than MaxSummaryDistinct distinct values, so none is shown (no
	// Values, no Counts).
	Values          []string  `json:"values,omitempty"`
	Counts          []float64 `json:"counts"`
	HighCardinality bool      `json:"high_cardinality,omitempty"`
}

// summaryVersion changes whenever what the summary describes may have.
func summaryVersion(d *store.Dataset) string {
	h := sha256.New()
	fmt.Fprintf(h, "v1\x00%s\x00%d\x00%d\x00%d", d.Visibility, d.Rows, d.Size, d.CreatedAt.UnixNano())
	for _, c := range d.Columns {
		fmt.Fprintf(h, "\x00%s\x00%s", c.Name, c.Type)
	}
	return hex.EncodeToString(h.Sum(nil)[:8])
}

// summary returns d's marginals, computing and storing them on first use.
// The store keeps the first one written, so a private dataset's noise is
// drawn once however many queries race.
func (g *Gateway) summary(d *store.Dataset) (*marginals, error) {
	ver := summaryVersion(d)
	b, err := g.store.CatalogSummary(d.ID, ver)
	if errors.Is(err, store.ErrNotFound) {
		v, err := g.store.OpenVersion(d)
		if err != nil {
			return nil, err
		}
		m, err := computeMarginals(context.Background(), g.scanned(v), d.Visibility != store.VisibilityPublic, newRand())
		_ = v.Close()
		if err != nil {
			return nil, fmt.Errorf("read dataset %s: %w", d.ID, err)
		}
		m.Version = ver
		nb, err := json.Marshal(m)
		if err != nil {
			return nil, err
		}
		if b, err = g.store.PutCatalogSummaryOnce(d.ID, ver, nb); err != nil {
			return nil, err
		}
	} else if err != nil {
		return nil, err
	}
	var m marginals
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, fmt.Errorf("decode summary of %s: %w", d.ID, err)
	}
	if m.Schema > summarySchema {
		return nil, fmt.Errorf("summary of %s has schema %d, written by a newer fedgrid (this one reads up to %d)", d.ID, m.Schema, summarySchema)
	}
	return &m, nil
}

// refreshSummaries computes missing summaries in the background (so the
// first query is quick) and drops those of deleted or changed datasets.
//
// A summary's noise is drawn once per dataset version: dropping a summary
// that is still current would let the next query draw fresh noise, and two
// noisy versions of the same data average towards the truth. So the drop
// decision uses the datasets as they are after the summaries were listed
// (dss may be seconds old: a dataset uploaded since, whose summary a query
// has already stored, is not in it), and nothing is dropped when that list
// cannot be read.
func (g *Gateway) refreshSummaries(ctx context.Context, dss []*store.Dataset) {
	keys, err := g.store.CatalogSummaryKeys()
	if err != nil {
		g.log.Warn("list catalog summaries", "err", err)
		return
	}
	for _, d := range dss {
		if slices.Contains(keys[d.ID], summaryVersion(d)) || ctx.Err() != nil {
			continue
		}
		if _, err := g.summary(d); err != nil && !errors.Is(err, store.ErrNotFound) {
			g.log.Warn("catalog summary", "dataset", d.ID, "err", err)
		}
	}
	now, err := g.store.Datasets()
	if err != nil {
		g.log.Warn("list datasets; stale catalog summaries stay until the next pass", "err", err)
		return
	}
	current := map[string]string{}
	for _, d := range now {
		current[d.ID] = summaryVersion(d)
	}
	for id, vers := range keys {
		for _, v := range vers {
			if current[id] != v {
				if err := g.store.DeleteCatalogSummary(id, v); err != nil {
					g.log.Warn("drop catalog summary", "dataset", id, "err", err)
				}
			}
		}
	}
}

// newRand is a ChaCha8 generator keyed from the operating system's CSPRNG.
func newRand() *rand.Rand {
	var seed [32]byte
	copy(seed[:], crypto.RandomBytes(32))
	return rand.New(rand.NewChaCha8(seed))
}

// discreteLaplace draws Z with P(Z=k) proportional to exp(-eps*|k|), as the
// difference of two geometric variables. Counts are integers, so integer
// noise leaves no floating-point traces of the true count.
func discreteLaplace(r *rand.Rand, eps float64) float64 {
	alpha := math.Exp(-eps)
	geo := func() float64 {
		u := 1 - r.Float64() // (0, 1]
		return math.Floor(math.Log(u) / math.Log(alpha))
	}
	return geo() - geo()
}

// privateEdges are data-independent bin edges for private numeric columns:
// 0, ±{1,2,5}·10^k for k in [-3, 11], ±10^12.
var privateEdges = func() []float64 {
	var pos []float64
	for k := -3; k <= 11; k++ {
		for _, m := range []float64{1, 2, 5} {
			pos = append(pos, m*math.Pow(10, float64(k)))
		}
	}
	pos = append(pos, 1e12)
	out := make([]float64, 0, 2*len(pos)+1)
	for i := len(pos) - 1; i >= 0; i-- {
		out = append(out, -pos[i])
	}
	out = append(out, 0)
	return append(out, pos...)
}()

// storedStats is a source with the per-column statistics computed at
// ingest, as a stored dataset version (colstore.Version) has.
type storedStats interface {
	Meta() *colstore.Meta
	ColumnRange(c int) (lo, hi float64, ok bool)
}

// computeMarginals summarises src in one scan. A public number column's
// bins span its range, which a stored version gives from its statistics
// (storedStats); only a source without them (a parsed table) is scanned
// once more beforehand to find the ranges. With private set the budget
// (PreviewEpsilon, PreviewDelta) is split evenly over the columns; each row
// adds one to one count per column (add/remove-one-row neighbours). Noise
// is drawn after the counting, column by column in column order. A text
// column with more than MaxSummaryDistinct distinct values stops being
// counted and is marked high-cardinality; no noise is drawn for it.
func computeMarginals(ctx context.Context, src dataset.Source, private bool, r *rand.Rand) (*marginals, error) {
	cols := src.Columns()
	m := &marginals{Schema: summarySchema, DP: private}
	if private {
		m.Epsilon, m.Delta = PreviewEpsilon, PreviewDelta
	}
	epsCol := PreviewEpsilon / float64(len(cols))
	deltaCol := PreviewDelta / float64(len(cols))
	numberCols := 0
	for _, c := range cols {
		if c.Type == dataset.TypeNumber {
			numberCols++
		}
	}
	acc := make([]columnAcc, len(cols))
	for i, c := range cols {
		acc[i] = columnAcc{number: c.Type == dataset.TypeNumber, lo: math.Inf(1), hi: math.Inf(-1), integer: true}
		if !acc[i].number {
			acc[i].counts = map[string]float64{}
		} else if private {
			acc[i].bins = make([]float64, len(privateEdges)-1)
		}
	}
	n := src.NumRows()
	if !private && numberCols > 0 {
		// Public number columns: their ranges, which set the bins, from
		// the stored statistics when they are there.
		rangePass := false
		for c := range acc {
			if acc[c].number && !acc[c].storedRange(src, c) {
				acc[c].needRange = true
				rangePass = true
			}
		}
		if rangePass && n > 0 {
			err := src.Scan(ctx, 0, n, 1<<14, func(b *dataset.Batch) error {
				for c := range acc {
					if acc[c].needRange {
						acc[c].ranges(b, c)
					}
				}
				return nil
			})
			if err != nil {
				return nil, err
			}
		}
		for c := range acc {
			if a := &acc[c]; a.number && n > 0 {
				a.edges = publicEdges(a.lo, a.hi)
				a.bins = make([]float64, len(a.edges)-1)
			}
		}
	}
	err := src.Scan(ctx, 0, n, 1<<14, func(b *dataset.Batch) error {
		for c := range acc {
			acc[c].count(b, c, private)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	for i, c := range cols {
		cs := columnSum{Name: c.Name, Type: c.Type}
		a := &acc[i]
		switch {
		case a.highCard:
			cs.HighCardinality = true
		case a.number && private:
			privateNumber(&cs, a.frac, n, a.bins, numberCols, epsCol, r)
		case a.number:
			publicNumber(&cs, a, n)
		case private:
			privateCategory(&cs, a.counts, epsCol, deltaCol, r)
		default:
			publicCategory(&cs, a.counts)
		}
		m.Columns = append(m.Columns, cs)
	}
	return m, nil
}

// columnAcc counts one column during computeMarginals' scans.
type columnAcc struct {
	number bool
	// Number columns: the range, whether all are whole and the most
	// decimals (public), the fractional values (private), the bins.
	lo, hi   float64
	integer  bool
	decimals int
	frac     int
	edges    []float64
	bins     []float64
	// needRange: the range is not stored and takes a scan (public).
	needRange bool
	// Category columns: every value's count, up to MaxSummaryDistinct
	// values; highCard (and counts nil) beyond.
	counts   map[string]float64
	highCard bool
}

// storedRange sets a public number column's range, whether its values are
// whole and its decimals from src's stored statistics, and reports
// whether src has them.
func (a *columnAcc) storedRange(src dataset.Source, c int) bool {
	st, ok := src.(storedStats)
	if !ok {
		return false
	}
	meta := st.Meta()
	if c >= len(meta.Columns) {
		return false
	}
	stats := meta.Columns[c].Stats
	if src.NumRows() == 0 {
		a.integer, a.decimals = stats.Integral, 0
		return true
	}
	lo, hi, ok := st.ColumnRange(c)
	if !ok {
		return false
	}
	a.lo, a.hi = lo, hi
	a.integer, a.decimals = stats.Integral, min(stats.Decimals, maxPublicDecimals)
	return true
}

// maxPublicDecimals bounds the decimals a public preview prints.
const maxPublicDecimals = 6

func (a *columnAcc) ranges(b *dataset.Batch, c int) {
	for i, v := range b.Num[c][:b.Len] {
		a.lo, a.hi = min(a.lo, v), max(a.hi, v)
		if v != math.Trunc(v) {
			a.integer = false
		}
		s := strings.TrimSpace(b.Cell(c, i))
		if j := strings.IndexAny(s, "eE"); j >= 0 {
			s = s[:j]
		}
		if _, frac, ok := strings.Cut(s, "."); ok {
			a.decimals = max(a.decimals, min(len(frac), maxPublicDecimals))
		}
	}
}

func (a *columnAcc) count(b *dataset.Batch, c int, private bool) {
	if !a.number {
		if a.highCard {
			return
		}
		for _, v := range b.Raw[c][:b.Len] {
			if n, ok := a.counts[v]; ok {
				a.counts[v] = n + 1
				continue
			}
			if len(a.counts) >= MaxSummaryDistinct {
				a.counts, a.highCard = nil, true
				return
			}
			a.counts[strings.Clone(v)] = 1 // a batch's text may live in the source's buffers
		}
		return
	}
	if private {
		for _, v := range b.Num[c][:b.Len] {
			if v != math.Trunc(v) {
				a.frac++
			}
			a.bins[binOf(privateEdges, v)]++
		}
		return
	}
	if a.edges == nil {
		return
	}
	for _, v := range b.Num[c][:b.Len] {
		a.bins[binOf(a.edges, v)]++
	}
}

// privateNumber: a quarter of the column's epsilon decides whether to
// print whole numbers (a noised count of fractional values under a tenth of
// the rows), the rest noises a histogram over privateEdges (counts, of n
// rows). Bins whose noised count stays under the level that noise alone
// reaches in any empty bin of the dataset once in a thousand summaries are
// dropped, so that empty ranges do not show up.
func privateNumber(cs *columnSum, frac, n int, counts []float64, numberCols int, eps float64, r *rand.Rand) {
	epsInt, epsHist := eps/4, eps*3/4
	cs.Integer = float64(frac)+discreteLaplace(r, epsInt) < math.Max(1, 0.1*float64(n))
	cs.Decimals = -1
	// P(noise >= floor) <= exp(-epsHist*floor) for one empty bin.
	floor := math.Ceil(math.Log(float64(numberCols*len(counts))/0.001) / epsHist)
	for i := range counts {
		counts[i] += discreteLaplace(r, epsHist)
		if counts[i] < floor {
			counts[i] = 0
		}
	}
	cs.Edges = slices.Clone(privateEdges)
	cs.Counts = counts
}

// binOf returns the bin of v among edges, clamping outside values to the ends.
func binOf(edges []float64, v float64) int {
	i, _ := slices.BinarySearch(edges, v) // edges[i-1] < v <= edges[i]
	if i > 0 && (i == len(edges) || edges[i] != v) {
		i--
	}
	return min(max(i, 0), len(edges)-2)
}

// publicEdges are ten equal-width bins over [lo, hi], or the one bin
// [lo, hi] when they are equal.
func publicEdges(lo, hi float64) []float64 {
	if lo == hi {
		return []float64{lo, hi}
	}
	const n = 10
	edges := make([]float64, n+1)
	for i := range edges {
		edges[i] = lo + (hi-lo)*float64(i)/n
	}
	edges[n] = hi
	return edges
}

// publicNumber: ten equal-width bins over [min, max], exact counts.
func publicNumber(cs *columnSum, a *columnAcc, n int) {
	cs.Integer, cs.Decimals = a.integer, a.decimals
	if n == 0 {
		return
	}
	cs.Edges, cs.Counts = a.edges, a.bins
	if a.lo == a.hi {
		cs.Counts = []float64{float64(n)}
	}
}

// privateCategory keeps a value only when its noised count clears a
// threshold that a value held by one row passes with probability under
// delta (Laplace partition selection), so rare values, names and IDs never
// appear.
func privateCategory(cs *columnSum, counts map[string]float64, eps, delta float64, r *rand.Rand) {
	threshold := 1 + math.Ceil(math.Log(1/delta)/eps)
	keys := sortedKeys(counts)
	for _, v := range keys {
		if n := counts[v] + discreteLaplace(r, eps); n >= threshold {
			cs.Values = append(cs.Values, v)
			cs.Counts = append(cs.Counts, n)
		}
	}
}

// publicCategory: exact counts of the 100 most frequent values.
func publicCategory(cs *columnSum, counts map[string]float64) {
	keys := sortedKeys(counts)
	slices.SortStableFunc(keys, func(a, b string) int { return int(counts[b] - counts[a]) })
	if len(keys) > 100 {
		keys = keys[:100]
	}
	for _, v := range keys {
		cs.Values = append(cs.Values, v)
		cs.Counts = append(cs.Counts, counts[v])
	}
}

func sortedKeys(m map[string]float64) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

// preview draws n rows, each cell independently from its column's
// marginal: no row is copied from the data.
func (m *marginals) preview(n int, r *rand.Rand) *wire.CatalogPreview {
	p := &wire.CatalogPreview{Synthetic: true, DP: m.DP, Epsilon: m.Epsilon, Delta: m.Delta, Columns: make([]string, len(m.Columns)), Rows: make([][]string, n)}
	for i, c := range m.Columns {
		p.Columns[i] = c.Name
		if c.HighCardinality {
			p.HighCardinality = append(p.HighCardinality, c.Name)
		}
	}
	for i := range p.Rows {
		row := make([]string, len(m.Columns))
		for j := range m.Columns {
			row[j] = m.Columns[j].draw(r)
		}
		p.Rows[i] = row
	}
	return p
}

func (c *columnSum) draw(r *rand.Rand) string {
	total := 0.0
	for _, n := range c.Counts {
		total += max(n, 0)
	}
	if total <= 0 {
		return suppressed
	}
	x := r.Float64() * total
	k := 0
	for k < len(c.Counts)-1 {
		x -= max(c.Counts[k], 0)
		if x < 0 {
			break
		}
		k++
	}
	for c.Counts[k] <= 0 { // x landed on the end: take the last bin with mass
		k--
	}
	if c.Type != dataset.TypeNumber {
		return c.Values[k]
	}
	lo, hi := c.Edges[k], c.Edges[k+1]
	v := lo + r.Float64()*(hi-lo)
	switch {
	case c.Integer:
		v = math.Round(v)
		if v > hi { // rounding may leave a bin whose edges are fractional
			v = math.Floor(hi)
		}
		return strconv.FormatFloat(v, 'f', 0, 64)
	case c.Decimals >= 0:
		return strconv.FormatFloat(v, 'f', c.Decimals, 64)
	default:
		return formatSignificant(v, 3)
	}
}

// formatSignificant prints v with about `digits` significant digits, in
// plain decimal notation.
func formatSignificant(v float64, digits int) string {
	if v == 0 {
		return "0"
	}
	d := digits - 1 - int(math.Floor(math.Log10(math.Abs(v))))
	return strconv.FormatFloat(v, 'f', min(max(d, 0), 9), 64)
}

// Preview draws n synthetic rows of a dataset for the admin API: the same
// synthetic preview data scientists get in the catalog (per-column
// marginals, noised once for private data), never real rows.
func (g *Gateway) Preview(datasetID string, n int) (*wire.CatalogPreview, error) {
	if n < 1 || n > wire.MaxPreviewRows {
		return nil, fmt.Errorf("rows must be 1 to %d, got %d", wire.MaxPreviewRows, n)
	}
	d, err := g.store.Dataset(datasetID)
	if err != nil {
		return nil, err
	}
	m, err := g.summary(d)
	if err != nil {
		return nil, err
	}
	return m.preview(n, newRand()), nil
}
