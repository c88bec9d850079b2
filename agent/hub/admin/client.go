package admin

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"

	"github.com/sluicehq/sluice/agent/internal/unixhttp"
)

// ErrNoHub means nothing answers on the socket. (Its text is the agent
// API's: the hub is an agent's process too.)
var ErrNoHub = errors.New("no agent is running there")

// Client talks to a hub's admin API on the hub's machine.
type Client struct {
	c *unixhttp.Client
}

// New returns a client for the hub serving its admin API on socket.
func New(socket string) *Client {
	return &Client{unixhttp.New(socket, "hub", "start it with `agent hub`, or pass --hub-admin / set SLUICE_HUB_ADMIN", ErrNoHub)}
}

// Members lists the project's members.
func (c *Client) Members(ctx context.Context) ([]Member, error) {
	var out []Member
	return out, c.do(ctx, "GET", "/v1/members", nil, &out)
}

// Revoke revokes a member at once.
func (c *Client) Revoke(ctx context.Context, node string) (*Member, error) {
	var m Member
	return &m, c.do(ctx, "POST", "/v1/members/"+url.PathEscape(node)+"/revoke", nil, &m)
}

// SetAttributes replaces a member's attributes.
func (c *Client) SetAttributes(ctx context.Context, node string, attrs map[string]string) (*Member, error) {
	var m Member
	return &m, c.do(ctx, "PUT", "/v1/members/"+url.PathEscape(node)+"/attributes", AttributesRequest{Attributes: attrs}, &m)
}

// Backup streams a consistent copy of the hub's database (GET /v1/backup)
// into w and returns its size. A copy cut short is an error.
func (c *Client) Backup(ctx context.Context, w io.Writer) (int64, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://hub/v1/backup", nil)
	if err != nil {
		return 0, fmt.Errorf("build request: %w", err)
	}
	resp, err := c.c.Send(req, false)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		if msg, ok := unixhttp.ReadMessage(resp); ok {
			return 0, errors.New(msg)
		}
		return 0, fmt.Errorf("%s answered %s", c.c.Server(), resp.Status)
	}
	n, err := io.Copy(w, resp.Body)
	if err == nil && resp.ContentLength >= 0 && n != resp.ContentLength {
		err = io.ErrUnexpectedEOF
	}
	if err != nil {
		return n, fmt.Errorf("receive backup (%d of %d bytes): %w", n, resp.ContentLength, err)
	}
	return n, nil
}

// do sends a request with in as its JSON body (nil: none) and decodes the
// reply into out (nil: ignored); the hub's error message is the error.
func (c *Client) do(ctx context.Context, method, path string, in, out any) error {
	return c.c.Do(ctx, method, path, in, out, func(_ int, msg string) error { return errors.New(msg) })
}
