package admin

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"syscall"
	"time"
)

// ErrNoHub means nothing answers on the socket. (Its text is the agent
// API's: the hub is an agent's process too.)
var ErrNoHub = errors.New("no agent is running there")

// Client talks to a hub's admin API on the hub's machine.
type Client struct {
	socket string
	http   *http.Client
}

// server and hint, for messages: what answers on the socket and how to
// start it or point at it.
const (
	server = "hub"
	hint   = "start it with `agent hub`, or pass --hub-admin / set SLUICE_HUB_ADMIN"
)

// New returns a client for the hub serving its admin API on socket.
func New(socket string) *Client {
	tr := &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "unix", socket)
	}}
	return &Client{socket: socket, http: &http.Client{Transport: tr, Timeout: 30 * time.Second}}
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
	resp, err := c.send(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		var e ErrorBody
		if json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(&e) == nil && e.Error != "" {
			return 0, errors.New(e.Error)
		}
		return 0, fmt.Errorf("%s answered %s", server, resp.Status)
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

// send sends req to the socket.
func (c *Client) send(req *http.Request) (*http.Response, error) {
	resp, err := c.http.Do(req)
	if err != nil {
		if errors.Is(err, syscall.ENOENT) || errors.Is(err, syscall.ECONNREFUSED) {
			return nil, fmt.Errorf("connect to %s at %s (%s): %w", server, c.socket, hint, ErrNoHub)
		}
		return nil, fmt.Errorf("connect to %s at %s: %w", server, c.socket, err)
	}
	return resp, nil
}

// do sends a request with in as its JSON body (nil: none) and decodes the
// reply into out (nil: ignored).
func (c *Client) do(ctx context.Context, method, path string, in, out any) error {
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return fmt.Errorf("encode request: %w", err)
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, "http://agent"+path, body)
	if err != nil {
		return fmt.Errorf("build request: %w", err)
	}
	resp, err := c.send(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if err != nil {
		return fmt.Errorf("read response: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		var e ErrorBody
		if json.Unmarshal(data, &e) == nil && e.Error != "" {
			return errors.New(e.Error)
		}
		return fmt.Errorf("%s answered %s", server, resp.Status)
	}
	if out != nil {
		if err := json.Unmarshal(data, out); err != nil {
			return fmt.Errorf("decode response: %w", err)
		}
	}
	return nil
}
