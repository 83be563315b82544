// Command agenttest is a tiny stand-in for a user's Go HTTP service. The
// tests in this directory build it with the leakgate agent injected through
// `go build -overlay`, exactly as leakgate does.
package main

import (
	"fmt"
	"log"
	"net"
	"net/http"
	_ "net/http/pprof" // registers on http.DefaultServeMux; must not clash with the agent
	"os"
	"runtime/debug"
	"strconv"
)

// sink keeps /alloc's objects from being optimised away or put on the stack.
var sink [][]byte

func main() {
	http.HandleFunc("/hello", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintln(w, "hello")
	})
	// /alloc?n=N&size=S allocates N heap objects of S bytes, so a test knows
	// exactly what the request allocated beyond serving an empty one.
	http.HandleFunc("/alloc", func(w http.ResponseWriter, r *http.Request) {
		n, _ := strconv.Atoi(r.URL.Query().Get("n"))
		size, _ := strconv.Atoi(r.URL.Query().Get("size"))
		objs := make([][]byte, 0, 1024)
		for i := 0; i < n && i < 1024; i++ {
			objs = append(objs, make([]byte, size))
		}
		sink = objs
		fmt.Fprintln(w, len(objs))
	})
	// /gcpercent?v=N is debug.SetGCPercent(N): with the GC off, sync.Pool
	// keeps what net/http pooled, so a request allocates the same each time.
	http.HandleFunc("/gcpercent", func(w http.ResponseWriter, r *http.Request) {
		v, err := strconv.Atoi(r.URL.Query().Get("v"))
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		fmt.Fprintln(w, debug.SetGCPercent(v))
	})
	addr := os.Getenv("AGENTTEST_ADDR")
	if addr == "" {
		addr = "127.0.0.1:0"
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		log.Fatal(err)
	}
	if f := os.Getenv("AGENTTEST_ADDR_FILE"); f != "" {
		if err := os.WriteFile(f+".tmp", []byte(ln.Addr().String()), 0o644); err != nil {
			log.Fatal(err)
		}
		if err := os.Rename(f+".tmp", f); err != nil {
			log.Fatal(err)
		}
	}
	log.Fatal(http.Serve(ln, nil))
}
