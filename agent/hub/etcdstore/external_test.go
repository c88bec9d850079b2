package etcdstore_test

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"testing"
	"time"

	"go.etcd.io/etcd/server/v3/embed"
	"go.uber.org/zap"

	"github.com/sluicehq/sluice/agent/hub/authority"
	"github.com/sluicehq/sluice/agent/hub/etcdstore"
	"github.com/sluicehq/sluice/agent/wire"
)

// externalEtcd runs an etcd that no hub embeds, serving clients on a port
// of 127.0.0.1, and returns its endpoint.
func externalEtcd(t *testing.T) string {
	t.Helper()
	cfg := embed.NewConfig()
	cfg.Dir = t.TempDir()
	cfg.ZapLoggerBuilder = embed.NewZapLoggerBuilder(zap.NewNop())
	port := freePorts(t, 1)[0]
	u, _ := url.Parse(fmt.Sprintf("http://127.0.0.1:%d", port))
	cfg.ListenClientUrls, cfg.AdvertiseClientUrls = []url.URL{*u}, []url.URL{*u}
	cfg.ListenPeerUrls = nil
	cfg.AdvertisePeerUrls = []url.URL{{Scheme: "http", Host: "localhost:0"}}
	cfg.InitialCluster = cfg.InitialClusterFromName(cfg.Name)
	e, err := embed.StartEtcd(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.Close)
	select {
	case <-e.Server.ReadyNotify():
	case <-time.After(20 * time.Second):
		t.Fatal("external etcd never ready")
	}
	return u.String()
}

// TestExternalEtcd: two hubs of one project on an external etcd: the one
// with hub.db migrates it, the other finds the records; a ticket used
// through one is used for the other; a second project on the same etcd
// keeps its records apart.
func TestExternalEtcd(t *testing.T) {
	ep := externalEtcd(t)
	p := newProject(t)
	open := func(p *authority.Project) *authority.Authority {
		st, err := etcdstore.Open(context.Background(), etcdstore.OpenOptions{Project: p, External: &etcdstore.External{Endpoints: []string{ep}}})
		if err != nil {
			t.Fatal(err)
		}
		a, err := authority.Open(p, authority.Options{Store: st})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { a.Close() })
		return a
	}
	a := open(p)
	other := *p
	other.Dir = t.TempDir() // a second hub: no hub.db
	b := open(&other)
	tk := ticket(t, p, 1)
	if _, err := a.Redeem(tk, nodeKey(t)); err != nil {
		t.Fatal(err)
	}
	if _, err := b.Redeem(tk, nodeKey(t)); !errors.Is(err, wire.ErrTicketUsed) {
		t.Fatalf("ticket used through hub a, through hub b: %v, want ErrTicketUsed", err)
	}
	q := newProject(t) // another project on the same etcd
	c := open(q)
	if gen, ms, err := c.Snapshot(); err != nil || gen != 0 || len(ms) != 0 {
		t.Fatalf("another project on the same etcd sees generation %d, %d members (%v)", gen, len(ms), err)
	}
}
