package server

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"time"

	"github.com/sluicehq/sluice/agent/api/apitype"
	"github.com/sluicehq/sluice/agent/flowlog"
)

// Observable is a Backend with a flow log (*daemon.Agent): the handler then
// serves GET /v1/observe.
type Observable interface {
	Flows() *flowlog.Log
}

// lostEvery is how often a following observer is told of events it lost.
const lostEvery = time.Second

// observeRoute serves GET /v1/observe: the flow log as JSON lines (one
// apitype.FlowEvent each), the newest ?last=N first, then, with
// ?follow=true, every new event until the client goes away. The agent
// never waits for a slow client: past its queue, events are dropped and
// the client gets a "lost" event saying how many.
func observeRoute(mux *http.ServeMux, b Backend) {
	o, ok := b.(Observable)
	if !ok {
		return
	}
	mux.HandleFunc("GET /v1/observe", func(w http.ResponseWriter, r *http.Request) {
		q, err := observeQuery(r)
		if err != nil {
			writeJSON(w, http.StatusBadRequest, apitype.ErrorBody{Error: err.Error()})
			return
		}
		f := flowlog.Filter{Portal: q.Portal, Verdict: q.Verdict, Workload: q.Workload, Peer: q.Peer}
		past, obs := o.Flows().Observe(f, q.Last, q.Follow, 0)
		if obs != nil {
			defer obs.Close()
		}
		w.Header().Set("Content-Type", "application/x-ndjson")
		w.WriteHeader(http.StatusOK)
		enc := json.NewEncoder(w)
		flush := func() {
			if fl, ok := w.(http.Flusher); ok {
				fl.Flush()
			}
		}
		for _, e := range past {
			if enc.Encode(e) != nil {
				return
			}
		}
		flush()
		if obs == nil {
			return
		}
		tick := time.NewTicker(lostEvery)
		defer tick.Stop()
		for {
			select {
			case <-r.Context().Done():
				return
			case e := <-obs.C():
				if enc.Encode(e) != nil {
					return
				}
			case <-tick.C:
			}
			if n := obs.Lost(); n > 0 {
				if enc.Encode(flowlog.Event{Time: time.Now(), Type: flowlog.TypeLost, Lost: n}) != nil {
					return
				}
			}
			flush()
		}
	})
}

func observeQuery(r *http.Request) (apitype.ObserveQuery, error) {
	v := r.URL.Query()
	q := apitype.ObserveQuery{Portal: v.Get("portal"), Verdict: v.Get("verdict"), Workload: v.Get("workload"), Peer: v.Get("peer")}
	switch q.Verdict {
	case "", flowlog.Allowed, flowlog.Refused:
	default:
		return q, fmt.Errorf("verdict %q: want allowed or refused", q.Verdict)
	}
	if s := v.Get("last"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 0 {
			return q, fmt.Errorf("last %q: want a number of events, 0 or more", s)
		}
		q.Last = n
	}
	if s := v.Get("follow"); s != "" {
		f, err := strconv.ParseBool(s)
		if err != nil {
			return q, fmt.Errorf("follow %q: want true or false", s)
		}
		q.Follow = f
	}
	return q, nil
}
