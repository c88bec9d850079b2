package scenario_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/sluicehq/sluice/agent/hub/authority"
	"github.com/sluicehq/sluice/agent/identity"
	"github.com/sluicehq/sluice/agent/relay"
	"github.com/sluicehq/sluice/agent/wire"
)

// The cluster test's agents: this test binary, started again in a
// company host's namespace (testenv starts processes there, not
// goroutines), as a minimal agent that enrolls with one hub and says on
// stdout what happened:
//
//	enrolled NODE                          the ticket was redeemed
//	refused CODE TEXT                      the hub refused (wire code)
//	word NODE GEN REVOKED ATTRS UNIXNANO   (watch) a member word arrived, and when
//	ended TEXT                             (watch) the client ended (revoked)

// helperEnv names the variables that make the test binary a helper.
const (
	helperMode    = "SLUICE_CLUSTER_HELPER" // enroll or watch
	helperHub     = "SLUICE_CLUSTER_HUB"
	helperProject = "SLUICE_CLUSTER_PROJECT"
	helperTicket  = "SLUICE_CLUSTER_TICKET"
	helperState   = "SLUICE_CLUSTER_STATE"
)

// runHelper runs the helper the environment asks for; ok false: none.
func runHelper() (code int, ok bool) {
	mode := os.Getenv(helperMode)
	if mode == "" {
		return 0, false
	}
	if err := helper(mode); err != nil {
		fmt.Println("helper failed:", err)
		return 1, true
	}
	return 0, true
}

func helper(mode string) error {
	p, err := authority.Load(os.Getenv(helperProject))
	if err != nil {
		return err
	}
	id, _, err := identity.LoadOrCreate(os.Getenv(helperState))
	if err != nil {
		return err
	}
	opts := relay.ClientOptions{Hub: os.Getenv(helperHub), Identity: id, AuthorityKey: p.AuthorityPublicKey(), Ticket: os.Getenv(helperTicket)}
	if mode == "watch" {
		opts.OnMember = func(u relay.MemberUpdate) {
			attrs, _ := json.Marshal(u.Attributes)
			fmt.Printf("word %s %d %v %s %d\n", u.Node, u.Generation, u.Revoked, attrs, time.Now().UnixNano())
		}
	}
	c, err := relay.NewClient(opts)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	if mode == "watch" {
		cancel()
		ctx, cancel = context.WithCancel(context.Background())
	}
	defer cancel()
	if _, err := c.Start(ctx); err != nil {
		fmt.Printf("refused %s %v\n", wireCode(err), err)
		return nil
	}
	fmt.Printf("enrolled %s\n", id.ID())
	if mode != "watch" {
		return nil
	}
	<-c.Done()
	fmt.Printf("ended %v\n", c.Err())
	return nil
}

// wireCode names the sentinel a refusal matches.
func wireCode(err error) string {
	for _, c := range []struct {
		code string
		err  error
	}{{"ticket_used", wire.ErrTicketUsed}, {"no_quorum", wire.ErrNoQuorum}, {"revoked", wire.ErrMemberRevoked}} {
		if errors.Is(err, c.err) {
			return c.code
		}
	}
	return "other"
}
