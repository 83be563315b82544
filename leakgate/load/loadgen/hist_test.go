package main

import (
	"math"
	"math/rand"
	"sort"
	"testing"
)

func TestHistogramPercentiles(t *testing.T) {
	rng := rand.New(rand.NewSource(7))
	const n = 100000
	vals := make([]int64, n)
	h := new(hist)
	var sum uint64
	for i := range vals {
		// log-uniform over 10 µs .. 10 s
		v := int64(math.Exp(math.Log(1e4) + rng.Float64()*(math.Log(1e10)-math.Log(1e4))))
		vals[i] = v
		sum += uint64(v)
		h.add(bucketOf(v), v)
	}
	sort.Slice(vals, func(i, j int) bool { return vals[i] < vals[j] })
	if h.n != n || h.sum != sum || h.min != vals[0] || h.max != vals[n-1] {
		t.Fatalf("count/sum/min/max = %d/%d/%d/%d, want %d/%d/%d/%d",
			h.n, h.sum, h.min, h.max, n, sum, vals[0], vals[n-1])
	}
	for _, q := range []float64{0.001, 0.1, 0.5, 0.9, 0.95, 0.99, 0.999} {
		exact := float64(vals[int(math.Ceil(q*n))-1])
		for name, got := range map[string]float64{
			"hist":    float64(h.quantile(q)),
			"buckets": float64(quantileOf(h.counts[:], h.n, q)),
		} {
			if rel := math.Abs(got-exact) / exact; rel > 0.01 {
				t.Errorf("%s p%v = %v, exact %v: off by %.3f%%", name, q*100, got, exact, rel*100)
			}
		}
	}
	if bucketOf(0) != 0 || bucketOf(-5) != 0 || bucketOf(1) != 0 || bucketOf(math.MaxInt64) != nBuckets-1 {
		t.Errorf("edge buckets wrong")
	}
}
