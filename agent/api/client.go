// Package api is the client of the agent's local HTTP API, served on a unix
// socket (package api/server has the routes), and the one client that
// agentctl uses to talk to it. It links only the standard library and
// package api/apitype, whose types it returns: none of the agent.
package api

import (
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

// DefaultSocket is where the agent serves its API unless told otherwise.
const DefaultSocket = "/run/sluice/agent.sock"

// ErrNoAgent means nothing answers on the socket.
var ErrNoAgent = errors.New("no agent is running there")

// ErrorBody is the body of every error response.
type ErrorBody = apitype.ErrorBody

// Client talks to an agent's local API.
type Client struct {
	c *unixhttp.Client
}

// NewClient returns a client for the agent serving socket.
func NewClient(socket string) *Client {
	return &Client{unixhttp.New(socket, "agent", "start one with `agent run`, or pass --agent / set SLUICE_AGENT", ErrNoAgent)}
}

func (c *Client) do(ctx context.Context, method, path string, in, out any) error {
	return c.c.Do(ctx, method, path, in, out, answerError)
}

// Status returns the agent's status.
func (c *Client) Status(ctx context.Context) (apitype.Status, error) {
	var st apitype.Status
	return st, c.do(ctx, http.MethodGet, "/v1/status", nil, &st)
}

// Relays lists the relays.
func (c *Client) Relays(ctx context.Context) ([]apitype.RelayInfo, error) {
	var out []apitype.RelayInfo
	return out, c.do(ctx, http.MethodGet, "/v1/relays", nil, &out)
}

// CreateRelay claims a relay name.
func (c *Client) CreateRelay(ctx context.Context, name string) (apitype.RelayInfo, error) {
	var out apitype.RelayInfo
	return out, c.do(ctx, http.MethodPost, "/v1/relays", apitype.RelayRequest{Name: name}, &out)
}

// DeleteRelay releases a relay name.
func (c *Client) DeleteRelay(ctx context.Context, name string) error {
	return c.do(ctx, http.MethodDelete, "/v1/relays/"+url.PathEscape(name), nil, nil)
}

// Inlets lists the inlets.
func (c *Client) Inlets(ctx context.Context) ([]apitype.InletInfo, error) {
	var out []apitype.InletInfo
	return out, c.do(ctx, http.MethodGet, "/v1/tcp-inlets", nil, &out)
}

// CreateInlet creates an inlet.
func (c *Client) CreateInlet(ctx context.Context, spec apitype.InletSpec) (apitype.Inlet, error) {
	var out apitype.Inlet
	return out, c.do(ctx, http.MethodPost, "/v1/tcp-inlets", spec, &out)
}

// DeleteInlet deletes an inlet.
func (c *Client) DeleteInlet(ctx context.Context, name string) error {
	return c.do(ctx, http.MethodDelete, "/v1/tcp-inlets/"+url.PathEscape(name), nil, nil)
}

// Outlets lists the outlets.
func (c *Client) Outlets(ctx context.Context) ([]apitype.OutletInfo, error) {
	var out []apitype.OutletInfo
	return out, c.do(ctx, http.MethodGet, "/v1/tcp-outlets", nil, &out)
}

// CreateOutlet creates an outlet.
func (c *Client) CreateOutlet(ctx context.Context, spec apitype.OutletSpec) (apitype.Outlet, error) {
	var out apitype.Outlet
	return out, c.do(ctx, http.MethodPost, "/v1/tcp-outlets", spec, &out)
}

// DeleteOutlet deletes an outlet.
func (c *Client) DeleteOutlet(ctx context.Context, name string) error {
	return c.do(ctx, http.MethodDelete, "/v1/tcp-outlets/"+url.PathEscape(name), nil, nil)
}

// Workloads lists the local workloads.
func (c *Client) Workloads(ctx context.Context) ([]apitype.WorkloadInfo, error) {
	var out []apitype.WorkloadInfo
	return out, c.do(ctx, http.MethodGet, "/v1/workloads", nil, &out)
}

// CreateWorkload adds a local workload.
func (c *Client) CreateWorkload(ctx context.Context, w apitype.Workload) (apitype.WorkloadInfo, error) {
	var out apitype.WorkloadInfo
	return out, c.do(ctx, http.MethodPost, "/v1/workloads", w, &out)
}

// DeleteWorkload deletes a local workload.
func (c *Client) DeleteWorkload(ctx context.Context, name string) error {
	return c.do(ctx, http.MethodDelete, "/v1/workloads/"+url.PathEscape(name), nil, nil)
}

// Datapath reports the BPF data path's state.
func (c *Client) Datapath(ctx context.Context) (apitype.DatapathStatus, error) {
	var out apitype.DatapathStatus
	return out, c.do(ctx, http.MethodGet, "/v1/datapath", nil, &out)
}

// Observe streams the agent's flow log: the newest q.Last events that pass
// q's filters, then, with q.Follow, each new one, calling fn with each
// until fn fails, ctx ends or the agent closes the stream.
func (c *Client) Observe(ctx context.Context, q apitype.ObserveQuery, fn func(apitype.FlowEvent) error) error {
	v := url.Values{}
	for k, s := range map[string]string{"portal": q.Portal, "verdict": q.Verdict, "workload": q.Workload, "peer": q.Peer} {
		if s != "" {
			v.Set(k, s)
		}
	}
	v.Set("last", fmt.Sprint(q.Last))
	v.Set("follow", fmt.Sprint(q.Follow))
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://agent/v1/observe?"+v.Encode(), nil)
	if err != nil {
		return fmt.Errorf("build request: %w", err)
	}
	resp, err := c.c.Send(req, true)
	if err != nil {
		if ctx.Err() != nil && !errors.Is(err, ErrNoAgent) {
			return nil
		}
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		if msg, ok := unixhttp.ReadMessage(resp); ok {
			return errors.New(msg)
		}
		return fmt.Errorf("%s answered %s", c.c.Server(), resp.Status)
	}
	dec := json.NewDecoder(resp.Body)
	for {
		var e apitype.FlowEvent
		if err := dec.Decode(&e); err != nil {
			if err == io.EOF || ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("read flow log: %w", err)
		}
		if err := fn(e); err != nil {
			return err
		}
	}
}
