package hub

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/sluicehq/sluice/agent/wire"
)

// TestAdminNoQuorum: an admin request a hub cut off from its cluster
// cannot commit is answered 503 with the reason, not 500.
func TestAdminNoQuorum(t *testing.T) {
	w := httptest.NewRecorder()
	adminReply(w, nil, fmt.Errorf("revoke n: %w", wire.ErrNoQuorum))
	if w.Code != http.StatusServiceUnavailable || !strings.Contains(w.Body.String(), "quorum") {
		t.Fatalf("no quorum: %d %s, want 503 saying why", w.Code, w.Body.String())
	}
}
