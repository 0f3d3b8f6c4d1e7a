package plan

import (
	"context"
	"math"
	"testing"
)

// A model scored on three gateways' rows through the wide secure sum: the
// accuracy equals the pooled rows' exactly, the loss to the fixed point's
// error, the AUC within the histograms' bin error.
func TestEvalFromSumsEqualsPooled(t *testing.T) {
	all := loadTable(t, "pima_diabetes.csv")
	train, test := all.Split(0.3, 1)
	p := loadPlan(t, "logreg_pima.json")
	p.Train.Epochs = 20
	m, err := Train(context.Background(), p, train, TrainOptions{})
	if err != nil {
		t.Fatal(err)
	}
	mp, err := ModelPlan(m)
	if err != nil {
		t.Fatal(err)
	}
	if spec, _ := FitNeeds(mp); !spec.Empty() {
		t.Fatal("the model's plan leaves statistics to fit")
	}
	parts := deal(test, 3)
	wide, sums := wideSum(t, len(parts), func(k int) []float64 {
		// Each gateway scores the model rebuilt from the declared plan, as a gateway does.
		s, err := EvalSums(context.Background(), &Model{Format: ModelFormat, Plan: mp, Params: m.Params, Preprocess: mustStates(t, mp)}, parts[k])
		if err != nil {
			t.Fatal(err)
		}
		return s
	})
	got, err := EvalFromSums(mp, sums)
	if err != nil {
		t.Fatal(err)
	}
	want, err := Evaluate(m, test)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("federated %+v; pooled %+v", got, want)
	if got.Rows != want.Rows || got.Accuracy != want.Accuracy {
		t.Fatalf("rows %d accuracy %v, pooled %d %v", got.Rows, got.Accuracy, want.Rows, want.Accuracy)
	}
	if math.Abs(got.Loss-want.Loss) > wide.Error()/float64(got.Rows)+1e-12 {
		t.Fatalf("loss %v, pooled %v", got.Loss, want.Loss)
	}
	if got.AUCError <= 0 || got.AUCError > 0.01 || math.Abs(got.AUC-want.AUC) > got.AUCError {
		t.Fatalf("AUC %v (bin error %v), pooled %v", got.AUC, got.AUCError, want.AUC)
	}
}

func mustStates(t *testing.T, p *Plan) []PreprocessState {
	t.Helper()
	s, err := DeclaredStates(p)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// Histograms with every pair in distinct bins give the exact AUC, error 0;
// one shared bin counts its pairs half.
func TestEvalAUCFromHistograms(t *testing.T) {
	p := loadPlan(t, "logreg_pima.json")
	sums := make([]float64, 3+2*EvalBins)
	sums[0], sums[2] = 4, 3
	sums[3+900], sums[3+500] = 1, 1                   // positives
	sums[3+EvalBins+100], sums[3+EvalBins+500] = 1, 1 // negatives
	ev, err := EvalFromSums(p, sums)
	if err != nil {
		t.Fatal(err)
	}
	// Pairs (pos, neg): (900,100) 1, (900,500) 1, (500,100) 1, (500,500) 1/2.
	if ev.AUC != 3.5/4 || ev.AUCError != 1.0/8 || ev.Accuracy != 0.75 {
		t.Fatalf("%+v", ev)
	}
	if _, err := EvalFromSums(p, sums[:10]); err == nil {
		t.Fatal("sums of the wrong length were read")
	}
}
