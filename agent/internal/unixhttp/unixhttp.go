// Package unixhttp is the client side that the two local APIs share: the
// agent's (package api) and the hub's admin API (package hub/admin), each
// HTTP with JSON bodies on a unix socket. It sends requests, turns "nothing
// listens there" into the caller's sentinel with a hint, and reads error
// answers. It links only the standard library, so agentctl may use it.
package unixhttp

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"syscall"
	"time"
)

// Client sends requests to one socket.
type Client struct {
	socket   string
	server   string // what answers there, for messages: "agent", "hub"
	hint     string // how to start it or point at it
	noServer error  // wrapped when nothing answers on the socket
	http     *http.Client
}

// requestTimeout bounds a request that is not a stream.
const requestTimeout = 30 * time.Second

// maxAnswer bounds an answer read whole (a stream is decoded as it comes).
const maxAnswer = 16 << 20

// New returns a client for the server (named server in messages) on socket;
// a request that finds nothing listening there fails with noServer and hint.
func New(socket, server, hint string, noServer error) *Client {
	tr := &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "unix", socket)
	}}
	return &Client{socket: socket, server: server, hint: hint, noServer: noServer,
		http: &http.Client{Transport: tr, Timeout: requestTimeout}}
}

// Server names what answers on the socket, for messages.
func (c *Client) Server() string { return c.server }

// Send sends req. A stream (an answer that lasts as long as the caller
// wants: a capture, a flow log) has no timeout; other requests 30 s.
func (c *Client) Send(req *http.Request, stream bool) (*http.Response, error) {
	hc := c.http
	if stream {
		hc = &http.Client{Transport: c.http.Transport}
	}
	resp, err := hc.Do(req)
	if err != nil {
		if errors.Is(err, syscall.ENOENT) || errors.Is(err, syscall.ECONNREFUSED) {
			return nil, fmt.Errorf("connect to %s at %s (%s): %w", c.server, c.socket, c.hint, c.noServer)
		}
		return nil, fmt.Errorf("connect to %s at %s: %w", c.server, c.socket, err)
	}
	return resp, nil
}

// errorBody is the body of every error answer of both APIs.
type errorBody struct {
	Error string `json:"error"`
}

// Message is the server's own message in an error answer's body data, if
// it sent one.
func Message(data []byte) (string, bool) {
	var e errorBody
	if json.Unmarshal(data, &e) == nil && e.Error != "" {
		return e.Error, true
	}
	return "", false
}

// ReadMessage reads an error answer's body (at most 1 MiB) for Message.
func ReadMessage(resp *http.Response) (string, bool) {
	data, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	return Message(data)
}

// Do sends a request with in as its JSON body (nil: none) and decodes the
// answer into out (nil: ignored). An error answer with a message becomes
// refused(status, message); one without says what answered what.
func (c *Client) Do(ctx context.Context, method, path string, in, out any, refused func(status int, msg string) error) error {
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return fmt.Errorf("encode request: %w", err)
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, "http://"+c.server+path, body)
	if err != nil {
		return fmt.Errorf("build request: %w", err)
	}
	resp, err := c.Send(req, false)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, maxAnswer))
	if err != nil {
		return fmt.Errorf("read response: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		if msg, ok := Message(data); ok {
			return refused(resp.StatusCode, msg)
		}
		return fmt.Errorf("%s answered %s", c.server, resp.Status)
	}
	if out != nil {
		if err := json.Unmarshal(data, out); err != nil {
			return fmt.Errorf("decode response: %w", err)
		}
	}
	return nil
}
