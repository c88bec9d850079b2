package api

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"

	"github.com/sluicehq/sluice/agent/api/apitype"
	"github.com/sluicehq/sluice/agent/internal/unixhttp"
)

// CaptureQuery selects what a capture receives: Kind is
// apitype.CaptureDecrypted or apitype.CaptureWire; empty Portal and Peer
// match every portal and peer.
type CaptureQuery struct {
	Kind, Portal, Peer string
}

// CaptureStream is a running capture; Close ends it.
type CaptureStream struct {
	body io.ReadCloser
	dec  *json.Decoder
}

// Capture starts a capture on the agent (GET /v1/capture). It runs until
// ctx is done or Close.
func (c *Client) Capture(ctx context.Context, q CaptureQuery) (*CaptureStream, error) {
	v := url.Values{}
	v.Set("kind", q.Kind)
	if q.Portal != "" {
		v.Set("portal", q.Portal)
	}
	if q.Peer != "" {
		v.Set("peer", q.Peer)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://agent/v1/capture?"+v.Encode(), nil)
	if err != nil {
		return nil, fmt.Errorf("build request: %w", err)
	}
	resp, err := c.c.Send(req, true) // a capture lasts as long as the caller wants
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		defer resp.Body.Close()
		if msg, ok := unixhttp.ReadMessage(resp); ok {
			return nil, errors.New(msg)
		}
		if resp.StatusCode == http.StatusNotFound {
			return nil, fmt.Errorf("start capture: this agent has no capture (older than agentctl?): %s answered %s", c.c.Server(), resp.Status)
		}
		return nil, fmt.Errorf("start capture: %s answered %s", c.c.Server(), resp.Status)
	}
	return &CaptureStream{body: resp.Body, dec: json.NewDecoder(bufio.NewReaderSize(resp.Body, 64<<10))}, nil
}

// Next returns the next record; io.EOF when the agent ended the capture.
func (s *CaptureStream) Next() (apitype.CaptureRecord, error) {
	var r apitype.CaptureRecord
	err := s.dec.Decode(&r)
	if err == io.ErrUnexpectedEOF {
		err = io.EOF // the agent stopped mid-record
	}
	return r, err
}

// Close ends the capture.
func (s *CaptureStream) Close() error { return s.body.Close() }
