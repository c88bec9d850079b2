package api

import (
	"context"
	"net/http"

	"github.com/sluicehq/sluice/agent/api/apitype"
)

// Version returns the running agent's build.
func (c *Client) Version(ctx context.Context) (apitype.Version, error) {
	var v apitype.Version
	return v, c.do(ctx, http.MethodGet, "/v1/version", nil, &v)
}
