package main

import (
	"math"
	"sync/atomic"
)

// Latency histograms with logarithmic buckets: a latency of ns nanoseconds
// (ns >= 1) goes to bucket floor(ln(ns)/ln(growth)); ns < 1 goes to bucket 0.
// A bucket i is read back as growth^(i+0.5) ns, which is within 1% of every
// value the bucket can hold.

const growth = 1.02

var lnGrowth = math.Log(growth)

// nBuckets covers every positive int64: ln(2^63)/ln(1.02) ≈ 2205.2.
const nBuckets = 2206

func bucketOf(ns int64) int {
	if ns < 1 {
		return 0
	}
	i := int(math.Log(float64(ns)) / lnGrowth)
	if i >= nBuckets {
		i = nBuckets - 1
	}
	return i
}

// bucketValue is the representative value, in ns, of bucket i.
func bucketValue(i int) int64 {
	return int64(math.Round(math.Pow(growth, float64(i)+0.5)))
}

// quantileOf returns the representative value of the bucket holding the
// nearest-rank q-quantile (0 < q <= 1) of counts, whose sum is total;
// 0 when total is 0.
func quantileOf(counts []uint64, total uint64, q float64) int64 {
	if total == 0 {
		return 0
	}
	rank := uint64(math.Ceil(q * float64(total)))
	if rank < 1 {
		rank = 1
	}
	var cum uint64
	for i, c := range counts {
		cum += c
		if cum >= rank {
			return bucketValue(i)
		}
	}
	return bucketValue(len(counts) - 1)
}

// hist is a single-goroutine histogram (one per worker, merged at the end)
// that also keeps the exact count, sum, min and max.
type hist struct {
	counts   [nBuckets]uint64
	n, sum   uint64
	min, max int64
}

func (h *hist) add(bucket int, ns int64) {
	h.counts[bucket]++
	if h.n == 0 || ns < h.min {
		h.min = ns
	}
	if ns > h.max {
		h.max = ns
	}
	h.n++
	h.sum += uint64(ns)
}

func (h *hist) merge(o *hist) {
	if o.n == 0 {
		return
	}
	for i, c := range o.counts {
		h.counts[i] += c
	}
	if h.n == 0 || o.min < h.min {
		h.min = o.min
	}
	if o.max > h.max {
		h.max = o.max
	}
	h.n += o.n
	h.sum += o.sum
}

// quantile is the bucket estimate clamped to the exact [min, max].
func (h *hist) quantile(q float64) int64 {
	v := quantileOf(h.counts[:], h.n, q)
	if h.n > 0 {
		v = min(max(v, h.min), h.max)
	}
	return v
}

// sparse lists the non-empty buckets as [index, count] pairs, sorted.
func (h *hist) sparse() [][2]uint64 {
	out := [][2]uint64{}
	for i, c := range h.counts {
		if c > 0 {
			out = append(out, [2]uint64{uint64(i), c})
		}
	}
	return out
}

// secHist collects one second of the run. It is shared by all workers and
// updated with atomics only; it is created lazily on the first completion
// that falls in its second.
type secHist struct {
	requests, errors atomic.Uint64
	counts           [nBuckets]atomic.Uint32 // successful requests' latencies
}

// summary returns the second's requests, errors and latency percentiles.
func (s *secHist) summary() (req, errs uint64, p50, p95, p99 int64) {
	if s == nil {
		return 0, 0, 0, 0, 0
	}
	counts := make([]uint64, nBuckets)
	var n uint64
	for i := range s.counts {
		c := uint64(s.counts[i].Load())
		counts[i] = c
		n += c
	}
	return s.requests.Load(), s.errors.Load(),
		quantileOf(counts, n, 0.50), quantileOf(counts, n, 0.95), quantileOf(counts, n, 0.99)
}
