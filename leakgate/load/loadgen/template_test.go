package main

import (
	"math/rand"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
)

func TestParseTemplate(t *testing.T) {
	x := &expander{rng: rand.New(rand.NewSource(1)), seqSrc: new(atomic.Uint64)}
	for _, tc := range []struct{ in, want string }{
		{"/plain/path?q=1", "/plain/path?q=1"},
		{"/items/{seq}", "/items/1"},
		{"{{seq}", "{seq}"},
		{"a{{b{{", "a{b{"},
		{`{"id": {seq}, "n": {rand:7-7}}`, `{"id": 2, "n": 7}`},
		{"{", "{"},
		{"{ }", "{ }"},
		{"", ""},
	} {
		tp, err := parseTemplate(tc.in)
		if err != nil {
			t.Fatalf("parseTemplate(%q): %v", tc.in, err)
		}
		x.seq = 0
		if got := string(x.appendTo(nil, &tp)); got != tc.want {
			t.Errorf("expand(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
	for _, bad := range []string{"{rand:5-1}", "{rand:x}", "{foo}", "/a/{seq", "{rand:1-}",
		"{rand:-1-5}", "{rand:1-2-3}", "{uuid", "{Seq}", "{rand:0-9223372036854775807}"} {
		_, err := parseTemplate("/p" + bad + "/q")
		if err == nil {
			t.Errorf("parseTemplate(%q): no error", bad)
			continue
		}
		name := bad
		if i := strings.IndexByte(bad, '{'); i > 0 {
			name = bad[i:]
		}
		if !strings.Contains(err.Error(), strings.TrimSuffix(name, "}")) {
			t.Errorf("error %q does not name %q", err, bad)
		}
	}
}

func TestExpandSeqRandUUID(t *testing.T) {
	var src atomic.Uint64
	tp, err := parseTemplate("/p/{seq}/{seq}")
	if err != nil {
		t.Fatal(err)
	}
	const workers, per = 8, 2000
	got := make([][]uint64, workers)
	var wg sync.WaitGroup
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			x := &expander{rng: rand.New(rand.NewSource(int64(w))), seqSrc: &src}
			var buf []byte
			for i := 0; i < per; i++ {
				x.seq = 0 // a new request
				buf = x.appendTo(buf[:0], &tp)
				parts := strings.Split(string(buf), "/")
				if parts[2] != parts[3] {
					t.Errorf("one request got two {seq} values: %q", buf)
					return
				}
				n, _ := strconv.ParseUint(parts[2], 10, 64)
				got[w] = append(got[w], n)
			}
		}(w)
	}
	wg.Wait()
	seen := map[uint64]bool{}
	for w, ns := range got {
		for i, n := range ns {
			if i > 0 && n <= ns[i-1] {
				t.Fatalf("worker %d: {seq} not increasing: %d after %d", w, n, ns[i-1])
			}
			if seen[n] {
				t.Fatalf("{seq} %d seen twice", n)
			}
			seen[n] = true
		}
	}
	for n := uint64(1); n <= workers*per; n++ {
		if !seen[n] {
			t.Fatalf("{seq} %d missing: not a gapless count from 1", n)
		}
	}

	x := &expander{rng: rand.New(rand.NewSource(2)), seqSrc: &src}
	rt, _ := parseTemplate("{rand:3-7}")
	counts := map[int]int{}
	for i := 0; i < 5000; i++ {
		n, err := strconv.Atoi(string(x.appendTo(nil, &rt)))
		if err != nil || n < 3 || n > 7 {
			t.Fatalf("{rand:3-7} gave %d (%v)", n, err)
		}
		counts[n]++
	}
	if len(counts) != 5 {
		t.Errorf("{rand:3-7} did not hit every value: %v", counts)
	}

	ut, _ := parseTemplate("{uuid}")
	re := regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$`)
	uuids := map[string]bool{}
	for i := 0; i < 1000; i++ {
		u := string(x.appendTo(nil, &ut))
		if !re.MatchString(u) {
			t.Fatalf("{uuid} gave %q", u)
		}
		uuids[u] = true
	}
	if len(uuids) != 1000 {
		t.Errorf("{uuid} repeated: %d distinct of 1000", len(uuids))
	}
}
