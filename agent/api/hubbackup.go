package api

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"syscall"
)

// Backup streams a consistent copy of the hub's database (GET /v1/backup)
// into w and returns its size. A copy cut short is an error.
func (h *HubAdmin) Backup(ctx context.Context, w io.Writer) (int64, error) {
	c := h.c
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://hub/v1/backup", nil)
	if err != nil {
		return 0, fmt.Errorf("build request: %w", err)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		if errors.Is(err, syscall.ENOENT) || errors.Is(err, syscall.ECONNREFUSED) {
			return 0, fmt.Errorf("connect to %s at %s (%s): %w", c.server, c.socket, c.hint, ErrNoAgent)
		}
		return 0, fmt.Errorf("connect to %s at %s: %w", c.server, c.socket, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		var e ErrorBody
		if json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(&e) == nil && e.Error != "" {
			return 0, errors.New(e.Error)
		}
		return 0, fmt.Errorf("%s answered %s", c.server, resp.Status)
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
