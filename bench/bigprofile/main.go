// Command bigprofile writes a large heap profile for bench/reports.py: every
// allocation is sampled (MemProfileRate = 1) and each comes from its own call
// path, 2^depth distinct stacks in all, so the profile holds one sample per
// path. Standard library only.
//
//	go run . -depth 18 -o heap.pb.gz
package main

import (
	"flag"
	"fmt"
	"os"
	"runtime"
	"runtime/pprof"
)

var kept [][]byte

//go:noinline
func left(depth int, path uint32) {
	descend(depth, path)
}

//go:noinline
func right(depth int, path uint32) {
	descend(depth, path)
}

// descend takes the branch the next bit of path names, so every path is a
// distinct stack of left/right frames; at the bottom it allocates and keeps.
func descend(depth int, path uint32) {
	if depth == 0 {
		kept = append(kept, make([]byte, 64+int(path%7)*16))
		return
	}
	if path&1 == 0 {
		left(depth-1, path>>1)
	} else {
		right(depth-1, path>>1)
	}
}

func main() {
	runtime.MemProfileRate = 1
	depth := flag.Int("depth", 18, "stack depth: 2^depth distinct stacks")
	out := flag.String("o", "heap.pb.gz", "where to write the heap profile")
	flag.Parse()
	if *depth < 1 || *depth > 24 {
		fmt.Fprintln(os.Stderr, "bigprofile: -depth must be between 1 and 24")
		os.Exit(2)
	}
	for p := uint32(0); p < 1<<uint(*depth); p++ {
		descend(*depth, p)
	}
	runtime.GC()
	f, err := os.Create(*out)
	if err != nil {
		fmt.Fprintln(os.Stderr, "bigprofile:", err)
		os.Exit(1)
	}
	if err := pprof.Lookup("heap").WriteTo(f, 0); err != nil {
		fmt.Fprintln(os.Stderr, "bigprofile:", err)
		os.Exit(1)
	}
	if err := f.Close(); err != nil {
		fmt.Fprintln(os.Stderr, "bigprofile:", err)
		os.Exit(1)
	}
	fmt.Println(len(kept), "allocations kept")
}
