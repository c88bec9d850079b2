// Package admin is the hub's administration API as its clients see it: the
// requests and replies of the API that `agent hub` serves on hub.sock (and
// `agent authority` on authority.sock), where the sockets are, and a client
// for them (what `agentctl member` and `agentctl hub backup` use).
//
// It is not the server: the hub serves the API (agent/hub's AdminHandler
// and AuthorityAdminHandler). It links no database and no hub code (only
// the standard library and the authority's record types, agent/hub/
// authority/store), so that agentctl can use it.
package admin

import (
	"os"
	"path/filepath"

	"github.com/sluicehq/sluice/agent/hub/authority/store"
)

// The API, served over HTTP on a unix socket on the hub's machine:
//
//	GET  /v1/members                     []Member
//	POST /v1/members/{node}/revoke       Member
//	PUT  /v1/members/{node}/attributes   AttributesRequest -> Member
//	GET  /v1/stats                       the relay's statistics (hub.Stats)
//	GET  /v1/backup                      a consistent copy of the database (hub.db; the authority's)
//
// Errors are {"error": "..."} (ErrorBody) with 400, 404 (no such member, no
// stats here, or no such request), 409 (revoked, or a relay without the
// authority) or 500.

// Member is a member of the project, as the authority records it.
type Member = store.Member

// AttributesRequest replaces a member's attributes (the body of PUT
// /v1/members/{node}/attributes).
type AttributesRequest struct {
	Attributes map[string]string `json:"attributes"`
}

// ErrorBody is the body of an error reply.
type ErrorBody struct {
	Error string `json:"error"`
}

// HubSocket is where `agent hub` serves its admin API unless told
// otherwise: in the project directory, whose keys already say who may
// administer the project.
func HubSocket(projectDir string) string { return filepath.Join(projectDir, "hub.sock") }

// AuthoritySocket is where `agent authority` serves the member requests
// of the admin API unless told otherwise.
func AuthoritySocket(projectDir string) string {
	return filepath.Join(projectDir, "authority.sock")
}

// MemberSocket is the socket `agentctl member --project DIR` talks to:
// the authority's own when it runs apart from the relay (its socket
// exists), else the hub's.
func MemberSocket(projectDir string) string {
	if st, err := os.Stat(AuthoritySocket(projectDir)); err == nil && st.Mode()&os.ModeSocket != 0 {
		return AuthoritySocket(projectDir)
	}
	return HubSocket(projectDir)
}
