package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"testing"
	"time"
)

// The progress lines, now written by encoding/json, read back (as Python's
// json.loads would) to the same values as the hand-formatted lines they
// replaced, and carry no other field.
func TestProgressLine(t *testing.T) {
	cfg := testConfig("http://127.0.0.1:1", simple("/"))
	cfg.Duration = 3 * time.Second
	var out bytes.Buffer
	cfg.Progress = &out
	r, err := newRunner(cfg)
	if err != nil {
		t.Fatal(err)
	}
	r.start = time.Now()
	s1 := r.second(0)
	s1.requests.Add(4100)
	s1.errors.Add(3)
	s1.counts[bucketOf(812345)].Add(4097)
	s2 := r.second(1)
	s2.requests.Add(7)
	s2.counts[bucketOf(1000)].Add(7)
	// second 3 saw no completion
	done := make(chan struct{})
	close(done) // the run is over: every line at once
	r.progress(done)

	lines := strings.Split(strings.TrimSuffix(out.String(), "\n"), "\n")
	if len(lines) != 3 {
		t.Fatalf("%d progress lines, want 3: %q", len(lines), out.String())
	}
	for k, want := range []string{
		fmt.Sprintf(`{"t": 1, "requests": 4100, "errors": 3, "rate": 4100.0, "p95_ns": %d}`, bucketValue(bucketOf(812345))),
		fmt.Sprintf(`{"t": 2, "requests": 4107, "errors": 3, "rate": 7.0, "p95_ns": %d}`, bucketValue(bucketOf(1000))),
		`{"t": 3, "requests": 4107, "errors": 3, "rate": 0.0, "p95_ns": 0}`,
	} {
		var got, old map[string]any
		if err := json.Unmarshal([]byte(lines[k]), &got); err != nil {
			t.Fatalf("line %d %q: %v", k+1, lines[k], err)
		}
		if err := json.Unmarshal([]byte(want), &old); err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(got, old) {
			t.Errorf("line %d = %s, want the values of %s", k+1, lines[k], want)
		}
	}
}

type failingWriter struct{ writes int }

func (f *failingWriter) Write([]byte) (int, error) {
	f.writes++
	return 0, errors.New("stderr is gone")
}

// A progress line that cannot be written ends the progress lines; the run
// goes on.
func TestProgressStopsAtAWriteError(t *testing.T) {
	cfg := testConfig("http://127.0.0.1:1", simple("/"))
	cfg.Duration = 3 * time.Second
	w := new(failingWriter)
	cfg.Progress = w
	r, err := newRunner(cfg)
	if err != nil {
		t.Fatal(err)
	}
	r.start = time.Now()
	done := make(chan struct{})
	close(done)
	r.progress(done)
	if w.writes != 1 {
		t.Errorf("%d writes, want 1", w.writes)
	}
}
