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
)

func main() {
	http.HandleFunc("/hello", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintln(w, "hello")
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
