package server

import (
	"encoding/json"
	"fmt"
	"net/http"
	"time"

	"github.com/sluicehq/sluice/agent/api/apitype"
	"github.com/sluicehq/sluice/agent/capture"
)

// Capturer is a Backend that can tap its portals (*daemon.Agent): GET
// /v1/capture streams apitype.CaptureRecord lines until the client goes.
type Capturer interface {
	Taps() *capture.Taps
}

// flushEvery bounds how long a record waits in the response's buffer, and
// how often a change in the dropped count is reported.
const flushEvery = 200 * time.Millisecond

func handleCapture(taps *capture.Taps) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		q := r.URL.Query()
		f := capture.Filter{Portal: q.Get("portal"), Peer: q.Get("peer")}
		switch k := q.Get("kind"); k {
		case apitype.CaptureDecrypted, "":
			f.Kind = capture.Decrypted
		case apitype.CaptureWire:
			f.Kind = capture.Wire
		default:
			writeJSON(w, http.StatusBadRequest, apitype.ErrorBody{Error: fmt.Sprintf("capture kind %q: want %s or %s", k, apitype.CaptureDecrypted, apitype.CaptureWire)})
			return
		}
		sub := taps.Subscribe(f, 0)
		defer sub.Close()
		w.Header().Set("Content-Type", "application/x-ndjson")
		w.WriteHeader(http.StatusOK)
		rc := http.NewResponseController(w)
		rc.Flush() // the client knows the capture runs
		streamCapture(r, w, rc, sub)
	}
}

// streamCapture writes sub's records until the client goes away or a write
// fails.
func streamCapture(r *http.Request, w http.ResponseWriter, rc *http.ResponseController, sub *capture.Sub) {
	enc := json.NewEncoder(w)
	seen := make(map[uint64]bool) // connections whose "open" was written
	var dropped uint64
	tick := time.NewTicker(flushEvery)
	defer tick.Stop()
	for {
		select {
		case <-r.Context().Done():
			return
		case <-tick.C:
			if d := sub.Dropped(); d != dropped {
				dropped = d
				if enc.Encode(apitype.CaptureRecord{Type: apitype.CaptureDropped, Time: time.Now(), Dropped: d}) != nil {
					return
				}
			}
			if rc.Flush() != nil {
				return
			}
		case rec := <-sub.Records():
			if writeRecord(enc, rec, seen) != nil {
				return
			}
			if len(sub.Records()) == 0 && rc.Flush() != nil {
				return // the queue is empty: what was written goes out now
			}
		}
	}
}

func writeRecord(enc *json.Encoder, rec capture.Record, seen map[uint64]bool) error {
	p := rec.Point
	if !seen[p.ID] {
		seen[p.ID] = true
		err := enc.Encode(apitype.CaptureRecord{Type: apitype.CaptureOpen, Conn: p.ID, Time: rec.Time,
			Kind: p.Kind.String(), Portal: p.Portal, Peer: p.Peer, Client: p.Client.String(), Server: p.Server.String()})
		if err != nil || rec.Type == capture.Open {
			return err
		}
	}
	out := apitype.CaptureRecord{Conn: p.ID, Time: rec.Time}
	switch rec.Type {
	case capture.Open:
		return nil // seen already
	case capture.Data:
		out.Type, out.FromClient, out.Offset, out.Data = apitype.CaptureData, rec.FromClient, rec.Offset, rec.Data
	case capture.End:
		out.Type, out.Reset = apitype.CaptureEnd, rec.Reset
		delete(seen, p.ID)
	}
	return enc.Encode(out)
}
