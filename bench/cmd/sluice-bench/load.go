package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"syscall"
	"time"

	"github.com/sluicehq/sluice/bench/load"
	"github.com/sluicehq/sluice/bench/peers"
)

// serve runs the load server until ctx ends.
func serve(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	listen := fs.String("listen", "0.0.0.0:5201", "address to listen on")
	if err := fs.Parse(args); err != nil {
		return err
	}
	l, err := net.Listen("tcp", *listen)
	if err != nil {
		return err
	}
	s := load.NewServer()
	stop := context.AfterFunc(ctx, func() { l.Close() })
	defer stop()
	fmt.Printf("serving on %s\n", l.Addr())
	err = s.Serve(l)
	s.Close()
	return err
}

// fwd runs the TCP forwarder until ctx ends.
func fwd(ctx context.Context, args []string) error {
	if len(args) == 0 {
		return errors.New("fwd: no LISTEN=TARGET pair")
	}
	return peers.RunForwarder(ctx, args, func() { fmt.Printf("forwarding %s\n", strings.Join(args, " ")) })
}

// client runs one load sample against --addr and prints its result.
func client(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("client", flag.ContinueOnError)
	addr := fs.String("addr", "", "server address (idle: comma-separated, the connections are spread over them)")
	mode := fs.String("mode", "", "throughput, latency, setup or idle")
	streams := fs.Int("streams", 1, "throughput: parallel connections")
	d := fs.Duration("duration", 3*time.Second, "how long a sample runs")
	maxConns := fs.Int("max", 2000, "setup: at most this many connections")
	conns := fs.Int("conns", 1000, "idle: connections to hold")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *addr == "" {
		return errors.New("client: --addr is required")
	}
	dial := load.TCPDialer(*addr, 10*time.Second)
	var res load.Result
	switch *mode {
	case "throughput":
		t, err := load.RunThroughput(ctx, dial, *streams, *d)
		if err != nil {
			return err
		}
		res.Throughput = &t
	case "latency":
		l, err := load.RunLatency(ctx, dial, *d)
		if err != nil {
			return err
		}
		res.Latency = &l
	case "setup":
		l, err := load.RunSetup(ctx, dial, *d, *maxConns)
		if err != nil {
			return err
		}
		res.Latency = &l
	case "idle":
		held, err := holdIdle(ctx, strings.Split(*addr, ","), *conns)
		if err != nil {
			return err
		}
		res.Held = held
	default:
		return fmt.Errorf("client: unknown --mode %q", *mode)
	}
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err == nil {
		res.CPUSeconds = tv(ru.Utime) + tv(ru.Stime)
	}
	return json.NewEncoder(os.Stdout).Encode(res)
}

func tv(t syscall.Timeval) float64 { return float64(t.Sec) + float64(t.Usec)/1e6 }

// holdIdle opens n connections spread over addrs, says "holding N", and
// keeps them until standard input closes.
func holdIdle(ctx context.Context, addrs []string, n int) (int, error) {
	var all []*load.Idle
	defer func() {
		for _, i := range all {
			i.Close()
		}
	}()
	held := 0
	for k, a := range addrs {
		share := n / len(addrs)
		if k < n%len(addrs) {
			share++
		}
		i, err := load.OpenIdle(ctx, load.TCPDialer(a, 30*time.Second), share, 32)
		if err != nil {
			return held, fmt.Errorf("through %s: %w", a, err)
		}
		all = append(all, i)
		held += i.Len()
	}
	fmt.Printf("holding %d\n", held)
	done := make(chan struct{})
	go func() {
		io.Copy(io.Discard, os.Stdin)
		close(done)
	}()
	select {
	case <-done:
	case <-ctx.Done():
	}
	return held, nil
}
