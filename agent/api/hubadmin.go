package api

import (
	"context"
	"net/url"
	"os"
	"path/filepath"

	"github.com/sluicehq/sluice/agent/authority"
	"github.com/sluicehq/sluice/agent/relay"
)

// HubAdminSocket is where `agent hub` serves its admin API unless told
// otherwise: in the project directory, whose keys already say who may
// administer the project.
func HubAdminSocket(projectDir string) string { return filepath.Join(projectDir, "hub.sock") }

// AuthorityAdminSocket is where `agent authority` serves the member requests
// of the admin API unless told otherwise.
func AuthorityAdminSocket(projectDir string) string {
	return filepath.Join(projectDir, "authority.sock")
}

// MemberAdminSocket is the socket `agentctl member --project DIR` talks to:
// the authority's own when it runs apart from the relay (its socket
// exists), else the hub's.
func MemberAdminSocket(projectDir string) string {
	if st, err := os.Stat(AuthorityAdminSocket(projectDir)); err == nil && st.Mode()&os.ModeSocket != 0 {
		return AuthorityAdminSocket(projectDir)
	}
	return HubAdminSocket(projectDir)
}

// HubAdmin talks to a hub's admin API (relay.Hub.AdminHandler) on the hub's
// machine.
type HubAdmin struct{ c *Client }

// NewHubAdmin returns a client for the hub serving its admin API on socket.
func NewHubAdmin(socket string) *HubAdmin {
	return &HubAdmin{newClient(socket, "hub", "start it with `agent hub`, or pass --hub-admin / set SLUICE_HUB_ADMIN")}
}

// Members lists the project's members.
func (h *HubAdmin) Members(ctx context.Context) ([]authority.Member, error) {
	var out []authority.Member
	return out, h.c.do(ctx, "GET", "/v1/members", nil, &out)
}

// Revoke revokes a member at once.
func (h *HubAdmin) Revoke(ctx context.Context, node string) (*authority.Member, error) {
	var m authority.Member
	return &m, h.c.do(ctx, "POST", "/v1/members/"+url.PathEscape(node)+"/revoke", nil, &m)
}

// SetAttributes replaces a member's attributes.
func (h *HubAdmin) SetAttributes(ctx context.Context, node string, attrs map[string]string) (*authority.Member, error) {
	var m authority.Member
	return &m, h.c.do(ctx, "PUT", "/v1/members/"+url.PathEscape(node)+"/attributes", relay.AttributesRequest{Attributes: attrs}, &m)
}
