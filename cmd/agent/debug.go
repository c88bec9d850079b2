package main

import (
	"net/http"
	"net/http/pprof"
	"time"

	"github.com/spf13/cobra"

	"github.com/sluicehq/sluice/agent/api"
)

// registerDebug adds --debug-socket to cmd.
func registerDebug(cmd *cobra.Command, path *string) {
	cmd.Flags().StringVar(path, "debug-socket", "", "serve Go's profiles (net/http/pprof: goroutines, heap, CPU) on this unix socket (0600), e.g. curl --unix-socket PATH http://x/debug/pprof/goroutine?debug=1 (default: none)")
}

// serveDebug serves net/http/pprof's handlers on the unix socket path ("":
// none) until stop is called.
func serveDebug(path string) (stop func(), err error) {
	if path == "" {
		return func() {}, nil
	}
	ln, err := api.Listen(path)
	if err != nil {
		return nil, err
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go srv.Serve(ln)
	return func() { srv.Close() }, nil
}
