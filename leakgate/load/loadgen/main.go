package main

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
	"time"
)

func main() { os.Exit(cli(os.Args[1:], os.Stdout, os.Stderr)) }

// cli runs the command line and returns the exit status.
func cli(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("loadgen", flag.ContinueOnError)
	fs.SetOutput(stderr)
	target := fs.String("target", "", "base URL of the service, on a loopback address (required)")
	scenarioPath := fs.String("scenario", "", "scenario JSON file (required)")
	conns := fs.Int("connections", 16, "concurrent requests and keep-alive connections")
	duration := fs.Duration("duration", 20*time.Second, "how long to send requests")
	rate := fs.Float64("rate", 0, "open-loop request rate in req/s; 0 = closed loop")
	timeout := fs.Duration("timeout", 10*time.Second, "per-request timeout")
	out := fs.String("out", "", "write the result JSON here instead of stdout")
	progress := fs.Bool("progress", false, "print a JSON progress line to stderr every second")
	seed := fs.Int64("seed", 0, "random seed; 0 = from the clock")
	stopGrace := fs.Duration("stop-grace", time.Second, "after SIGTERM/SIGINT, how long requests in flight may take to finish")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	fail := func(err error) int {
		fmt.Fprintln(stderr, "loadgen:", err)
		var ue *usageError
		if errors.As(err, &ue) {
			return 2
		}
		return 1
	}
	if fs.NArg() > 0 {
		return fail(usagef("unexpected argument %q", fs.Arg(0)))
	}
	if *scenarioPath == "" {
		return fail(usagef("-scenario is required"))
	}
	sc, err := loadScenario(*scenarioPath)
	if err != nil {
		return fail(err)
	}
	cfg := config{Target: *target, Scenario: sc, Connections: *conns, Duration: *duration,
		Rate: *rate, Timeout: *timeout, Seed: *seed, StopGrace: *stopGrace}
	if *progress {
		cfg.Progress = stderr
	}
	// The first SIGTERM or SIGINT ends the window early; the result of what
	// ran is still written.
	signals := make(chan os.Signal, 1)
	signal.Notify(signals, syscall.SIGTERM, syscall.SIGINT)
	defer signal.Stop(signals)
	stop := make(chan struct{})
	finished := make(chan struct{})
	defer close(finished)
	go func() {
		select {
		case <-signals:
			close(stop)
		case <-finished:
		}
	}()
	cfg.Stop = stop
	res, err := run(cfg)
	if err != nil {
		return fail(err)
	}
	data, err := json.Marshal(res)
	if err != nil {
		return fail(err)
	}
	data = append(data, '\n')
	if *out == "" {
		_, err = stdout.Write(data)
	} else {
		err = os.WriteFile(*out, data, 0o644)
	}
	if err != nil {
		return fail(err)
	}
	return 0
}

// usageError marks a bad flag, target or scenario: exit status 2.
type usageError struct{ msg string }

func (e *usageError) Error() string { return e.msg }

func usagef(format string, a ...any) error { return &usageError{fmt.Sprintf(format, a...)} }

// config is one run as the command line describes it.
type config struct {
	Target      string
	Scenario    scenario
	Connections int
	Duration    time.Duration
	Rate        float64 // req/s; 0 = closed loop
	Timeout     time.Duration
	Seed        int64     // 0 = from the clock
	Progress    io.Writer // nil = no progress lines
	// Stop, when closed, ends the window early (nil: never); requests in
	// flight then have StopGrace to finish.
	Stop      <-chan struct{}
	StopGrace time.Duration
}
