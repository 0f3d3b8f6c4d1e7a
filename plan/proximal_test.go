package plan

import (
	"bytes"
	"context"
	"math"
	"os"
	"testing"

	"github.com/fedgrid/fedgrid/dataset"
)

// FedProx's proximal term keeps training near its starting weights, on
// every engine: the larger mu, the closer; mu 0 trains as before.
func TestProximalTerm(t *testing.T) {
	b, err := os.ReadFile("testdata/logreg_pima.json")
	if err != nil {
		t.Fatal(err)
	}
	csv, err := os.ReadFile("../dataset/testdata/pima_diabetes.csv")
	if err != nil {
		t.Fatal(err)
	}
	tbl, err := dataset.ReadCSV(bytes.NewReader(csv), dataset.Limits{})
	if err != nil {
		t.Fatal(err)
	}
	for _, eng := range []Engine{EngineNative64, EngineGorgonia} {
		dist := map[float64]float64{}
		for _, mu := range []float64{0, 1, 100} {
			p, err := Parse(b)
			if err != nil {
				t.Fatal(err)
			}
			p.Train.Epochs = 5
			p.Train.ProximalMu = mu
			init := map[string]Tensor{"w": {Shape: []int{8, 1}, Data: []float64{1, 1, 1, 1, 1, 1, 1, 1}}, "b": {Shape: []int{1}, Data: []float64{1}}}
			m, err := Train(context.Background(), p, tbl, TrainOptions{Engine: eng, Init: init})
			if err != nil {
				t.Fatal(err)
			}
			var d float64
			for name, t0 := range init {
				for i, v := range m.Params[name].Data {
					d += (v - t0.Data[i]) * (v - t0.Data[i])
				}
			}
			dist[mu] = math.Sqrt(d)
		}
		t.Logf("%s: distance from the start with mu 0, 1, 100: %.4f %.4f %.4f", eng, dist[0], dist[1], dist[100])
		if !(dist[100] < dist[1] && dist[1] < dist[0]) {
			t.Fatalf("%s: the proximal term does not pull towards the start: %v", eng, dist)
		}
	}
	p, _ := Parse(b)
	p.Train.ProximalMu = -1
	if err := p.Validate(); err == nil {
		t.Fatal("negative proximal_mu accepted")
	}
}
