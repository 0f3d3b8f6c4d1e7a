package plan

import (
	"math"
	"os"
	"slices"
	"strings"
	"testing"
)

func TestUpdateCodecRoundTrip(t *testing.T) {
	global := map[string]Tensor{"w": {Shape: []int{2, 2}, Data: []float64{0.5, -1, 2, 0}}, "b": {Shape: []int{1}, Data: []float64{0.1}}}
	c, err := NewUpdateCodec(1000, 10, 3)
	if err != nil {
		t.Fatal(err)
	}
	type upd struct {
		rows  int
		loss  float64
		local map[string]Tensor
	}
	ups := []upd{
		{300, 0.5, map[string]Tensor{"w": {Shape: []int{2, 2}, Data: []float64{0.6, -1.2, 2.5, 0.1}}, "b": {Shape: []int{1}, Data: []float64{0}}}},
		{100, 0.7, map[string]Tensor{"w": {Shape: []int{2, 2}, Data: []float64{0.4, -0.9, 1.5, -0.3}}, "b": {Shape: []int{1}, Data: []float64{0.3}}}},
		{5000, 0.2, map[string]Tensor{"w": {Shape: []int{2, 2}, Data: []float64{0.5, -1, 2, 50}}, "b": {Shape: []int{1}, Data: []float64{0.1}}}}, // rows capped, one change clipped
	}
	sum := make([]uint32, c.Length(global))
	for _, u := range ups {
		x, _, err := c.Encode(u.rows, u.loss, u.local, global)
		if err != nil {
			t.Fatal(err)
		}
		for i := range x {
			sum[i] += x[i]
		}
	}
	rows, loss, delta, err := c.Decode(sum, global)
	if err != nil {
		t.Fatal(err)
	}
	if rows != 1400 {
		t.Fatalf("rows %v, want 1400 (the third capped at 1000)", rows)
	}
	if want := (300*0.5 + 100*0.7 + 1000*0.2) / 1400; math.Abs(loss-want) > 1e-6 {
		t.Fatalf("loss %v, want %v", loss, want)
	}
	wantW3 := (300*0.1 + 100*-0.3 + 1000*10.0) / 1400 // the change of 50 clipped to 10
	if math.Abs(delta["w"].Data[3]-wantW3) > 1e-6 {
		t.Fatalf("delta w[3] %v, want %v", delta["w"].Data[3], wantW3)
	}
	wantB := (300*-0.1 + 100*0.2) / 1400
	if math.Abs(delta["b"].Data[0]-wantB) > 1e-6 {
		t.Fatalf("delta b %v, want %v", delta["b"].Data[0], wantB)
	}
}

func TestDeclaredStates(t *testing.T) {
	b, err := os.ReadFile("testdata/logreg_pima.json")
	if err != nil {
		t.Fatal(err)
	}
	p, err := Parse(b)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := DeclaredStates(p); err == nil || !strings.Contains(err.Error(), "declare") {
		t.Fatalf("undeclared standardize accepted: %v", err)
	}
	p.Preprocess[0].Mean = make([]float64, 8)
	p.Preprocess[0].Std = []float64{1, 2, 3, 4, 5, 6, 7, 8}
	st, err := DeclaredStates(p)
	if err != nil {
		t.Fatal(err)
	}
	if len(st) != 1 || st[0].Std[7] != 8 {
		t.Fatalf("states %+v", st)
	}
	init, err := InitialParams(p)
	if err != nil {
		t.Fatal(err)
	}
	if len(init) != 2 || ParamCount(init) != 9 {
		t.Fatalf("initial params %+v", init)
	}
}

// The plain sum of Values decodes to what the quantised sum decodes to,
// within the quantisation error; CheckValues refuses what Values cannot produce.
func TestUpdateCodecValues(t *testing.T) {
	global := map[string]Tensor{"w": {Shape: []int{3}, Data: []float64{0.5, -1, 2}}, "b": {Shape: []int{1}, Data: []float64{0.1}}}
	c, err := NewUpdateCodec(1000, 10, 2)
	if err != nil {
		t.Fatal(err)
	}
	locals := []map[string]Tensor{
		{"w": {Shape: []int{3}, Data: []float64{0.6, -1.2, 30}}, "b": {Shape: []int{1}, Data: []float64{0}}},
		{"w": {Shape: []int{3}, Data: []float64{0.4, -0.9, 1.5}}, "b": {Shape: []int{1}, Data: []float64{0.3}}},
	}
	words := make([]uint32, c.Length(global))
	vals := make([]float64, c.Length(global))
	for i, l := range locals {
		v, err := c.Values(300+100*i, 0.5, l, global)
		if err != nil {
			t.Fatal(err)
		}
		if err := c.CheckValues(v, global); err != nil {
			t.Fatal(err)
		}
		x, _, err := c.Encode(300+100*i, 0.5, l, global)
		if err != nil {
			t.Fatal(err)
		}
		for j := range v {
			vals[j] += v[j]
			words[j] += x[j]
		}
	}
	r1, l1, d1, err := c.Decode(words, global)
	if err != nil {
		t.Fatal(err)
	}
	r2, l2, d2, err := c.DecodeValues(vals, global)
	if err != nil {
		t.Fatal(err)
	}
	tol := c.delta.Error(2) / r2
	if r1 != r2 || math.Abs(l1-l2) > 1e-6 {
		t.Fatalf("rows/loss %v %v, plain %v %v", r1, l1, r2, l2)
	}
	for name, d := range d1 {
		for i := range d.Data {
			if math.Abs(d.Data[i]-d2[name].Data[i]) > tol {
				t.Fatalf("%s[%d]: quantised %v, plain %v (tolerance %v)", name, i, d.Data[i], d2[name].Data[i], tol)
			}
		}
	}
	for _, bad := range [][]float64{
		{1001, 0, 0, 0, 0, 0},        // more rows than MaxRows
		{10.5, 0, 0, 0, 0, 0},        // not a whole row count
		{10, 0, 0, 101, 0, 0},        // a change over rows * clip
		{10, 0, 0, math.NaN(), 0, 0}, // not finite
		{10, 0, 0, 0},                // too short
	} {
		if err := c.CheckValues(bad, global); err == nil {
			t.Errorf("CheckValues(%v) accepted", bad)
		}
	}
}

func TestFlatten(t *testing.T) {
	p := map[string]Tensor{"w": {Shape: []int{2, 2}, Data: []float64{1, 2, 3, 4}}, "b": {Shape: []int{2}, Data: []float64{5, 6}}}
	v := Flatten(p)
	if want := []float64{5, 6, 1, 2, 3, 4}; !slices.Equal(v, want) {
		t.Fatalf("Flatten %v, want %v (b before w)", v, want)
	}
	q, err := Unflatten(v, p)
	if err != nil {
		t.Fatal(err)
	}
	for name, x := range p {
		if !slices.Equal(q[name].Shape, x.Shape) || !slices.Equal(q[name].Data, x.Data) {
			t.Fatalf("%s: %v, want %v", name, q[name], x)
		}
	}
	if _, err := Unflatten(v[1:], p); err == nil {
		t.Fatal("a short vector was shaped")
	}
}
