package plan

import (
	"encoding/json"
	"testing"
)

// The weights hash depends on names, shapes and values, not on how the
// weights were encoded on the way (a JSON round trip keeps it).
func TestWeightsSHA256(t *testing.T) {
	w := map[string]Tensor{"w": {Shape: []int{2, 1}, Data: []float64{0.1, -2.5e-7}}, "b": {Shape: []int{1}, Data: []float64{3}}}
	h := WeightsSHA256(w)
	b, err := json.Marshal(w)
	if err != nil {
		t.Fatal(err)
	}
	var back map[string]Tensor
	if err := json.Unmarshal(b, &back); err != nil {
		t.Fatal(err)
	}
	if WeightsSHA256(back) != h {
		t.Fatal("a JSON round trip changed the hash")
	}
	for name, change := range map[string]func(map[string]Tensor){
		"value":   func(m map[string]Tensor) { m["w"].Data[1] = -2.5000000000000004e-7 },
		"shape":   func(m map[string]Tensor) { m["w"] = Tensor{Shape: []int{1, 2}, Data: m["w"].Data} },
		"name":    func(m map[string]Tensor) { m["c"] = m["b"]; delete(m, "b") },
		"missing": func(m map[string]Tensor) { delete(m, "b") },
	} {
		c := map[string]Tensor{}
		for k, v := range back {
			c[k] = Tensor{Shape: append([]int(nil), v.Shape...), Data: append([]float64(nil), v.Data...)}
		}
		change(c)
		if WeightsSHA256(c) == h {
			t.Errorf("a changed %s keeps the hash", name)
		}
	}
}
