// Package kube turns the pods of the agent's Kubernetes node into workloads
// (agent run --kubernetes): a client-go shared informer watches the pods
// whose spec.nodeName is the node, and every change makes the whole set of
// their workloads again, which the agent takes with ReplaceWorkloads.
//
//	API server ──list+watch (fieldSelector spec.nodeName=NODE)──> informer
//	  cache ──event──> kick (one slot: events that come while a set is being
//	  made are one more pass) ──> reconcile: every pod in the cache ──Map──>
//	  workload, its host-side interface found (iface_linux.go) ──>
//	  Store.ReplaceWorkloads("kubernetes", set)
//
// Making the whole set each time, from the informer's cache, is what makes
// a resync or a relist harmless: the same pods give the same set, which
// changes nothing; a pod a relist no longer has is left out of the next
// set, which removes it.
package kube

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"sort"
	"sync"
	"time"

	"go.uber.org/zap"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/tools/cache"

	"github.com/sluicehq/sluice/agent/daemon"
)

// ErrNotSynced means the pods of the node have not been listed yet (the
// API server is not reachable, or refuses the agent): no pod is a
// workload until they are.
var ErrNotSynced = errors.New("the pods of this node are not listed yet")

// Store is what the source feeds: the agent (daemon.Agent.ReplaceWorkloads).
type Store interface {
	ReplaceWorkloads(source string, ws []daemon.Workload) error
}

// Resolver finds the host-side interface a pod's address sits behind
// (HostInterface).
type Resolver func(addr netip.Addr) (*daemon.Binding, error)

// retryResolve is how often the interfaces not found yet are looked for again.
const retryResolve = time.Second

// Options configure New. Client, Node and Store are required.
type Options struct {
	Client PodClient
	Node   string // the node whose pods are workloads (spec.nodeName)
	Store  Store
	Log    *zap.Logger // nil: no logs
	// Resync is the informer's resync period; 0: none (the watch keeps the
	// cache current; relists after a broken watch still happen).
	Resync time.Duration
	// Resolve finds a pod's host-side interface; nil: HostInterface.
	Resolve Resolver
	// Server names the API server in errors (the rest config's Host).
	Server string
}

// Source is the informer on the node's pods and what it feeds the store.
type Source struct {
	opts     Options
	log      *zap.Logger
	informer cache.SharedIndexInformer
	kick     chan struct{}
	dupes    map[string]string // address -> the pods that share it, as last logged (Run's goroutine only)

	mu       sync.Mutex // guards the following
	synced   bool
	lastErr  error                  // the last watch or list error, until the next sync
	bindings map[types.UID]podIface // where each pod's address was found
	skipped  map[types.UID]string   // labels left out, as last logged
	unbound  map[string]string      // workload -> why its interface is not found
}

// podIface is where a pod's address was found.
type podIface struct {
	addr    netip.Addr
	binding *daemon.Binding
}

// New makes the source; Run starts it.
func New(opts Options) (*Source, error) {
	switch {
	case opts.Client == nil:
		return nil, errors.New("watch pods: no Kubernetes client")
	case opts.Node == "":
		return nil, errors.New("watch pods: no node name (--node-name, or $NODE_NAME from the downward API)")
	case opts.Store == nil:
		return nil, errors.New("watch pods: no workload store")
	}
	if opts.Log == nil {
		opts.Log = zap.NewNop()
	}
	if opts.Resolve == nil {
		opts.Resolve = HostInterface
	}
	s := &Source{opts: opts, log: opts.Log, kick: make(chan struct{}, 1),
		bindings: map[types.UID]podIface{}, skipped: map[types.UID]string{}, unbound: map[string]string{}}
	selector := fields.OneTermEqualSelector("spec.nodeName", opts.Node).String()
	lw := listThenWatch{&cache.ListWatch{
		ListWithContextFunc: func(ctx context.Context, o metav1.ListOptions) (runtime.Object, error) {
			o.FieldSelector = selector
			return opts.Client.List(ctx, o)
		},
		WatchFuncWithContext: func(ctx context.Context, o metav1.ListOptions) (watch.Interface, error) {
			o.FieldSelector = selector
			return opts.Client.Watch(ctx, o)
		},
	}}
	s.informer = cache.NewSharedIndexInformer(lw, &corev1.Pod{}, opts.Resync, cache.Indexers{})
	if err := s.informer.SetWatchErrorHandlerWithContext(s.watchError); err != nil {
		return nil, fmt.Errorf("watch pods: %w", err)
	}
	kick := func() {
		select {
		case s.kick <- struct{}{}:
		default:
		}
	}
	if _, err := s.informer.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(any) { kick() },
		UpdateFunc: func(any, any) { kick() },
		DeleteFunc: func(any) { kick() },
	}); err != nil {
		return nil, fmt.Errorf("watch pods: %w", err)
	}
	return s, nil
}

// listThenWatch is the list and watch of the node's pods as the informer
// sees them: a client that lists, then watches. client-go's watch-list
// streaming (the WatchListClient feature, on by default) retries a refused
// or failed connection inside the reflector, logging it only at klog's
// verbosity 2 and never to the watch error handler: an agent whose API server is unreachable, or whose
// RBAC forbids the list, would say nothing and look as if it had no pods.
// A plain list fails to the handler, which says why and keeps the agent
// not ready (TestSourceUnreachable).
type listThenWatch struct{ *cache.ListWatch }

// IsWatchListSemanticsUnSupported turns watch-list streaming off
// (watchlist.DoesClientNotSupportWatchListSemantics).
func (listThenWatch) IsWatchListSemanticsUnSupported() bool { return true }

// watchError is told every error of the informer's list and watch; the
// informer retries with a backoff on its own.
func (s *Source) watchError(_ context.Context, _ *cache.Reflector, err error) {
	s.mu.Lock()
	first := s.lastErr == nil
	s.lastErr = err
	synced := s.synced
	s.mu.Unlock()
	msg := "cannot watch the pods of this node on the Kubernetes API server; retrying"
	if !synced {
		msg = "cannot list the pods of this node on the Kubernetes API server; no pod is a workload until it can; retrying"
	}
	if first || !synced {
		s.log.Error(msg, zap.String("server", s.opts.Server), zap.String("node", s.opts.Node), zap.Error(err))
	} else {
		s.log.Warn(msg, zap.String("server", s.opts.Server), zap.String("node", s.opts.Node), zap.Error(err))
	}
}

// Run watches the pods and feeds the store until ctx ends.
func (s *Source) Run(ctx context.Context) {
	// The informer stops with Run, and Run returns once it has.
	ictx, stop := context.WithCancel(ctx)
	var informer sync.WaitGroup
	informer.Go(func() { s.informer.RunWithContext(ictx) })
	defer informer.Wait()
	defer stop()
	if !cache.WaitForCacheSync(ctx.Done(), s.informer.HasSynced) {
		return
	}
	s.mu.Lock()
	s.synced, s.lastErr = true, nil
	s.mu.Unlock()
	s.log.Info("the pods of this node are workloads", zap.String("node", s.opts.Node), zap.Int("pods", len(s.informer.GetStore().List())))
	retry := time.NewTicker(retryResolve)
	defer retry.Stop()
	for {
		s.reconcile()
		select {
		case <-ctx.Done():
			return
		case <-s.kick:
		case <-retry.C:
			s.mu.Lock()
			pending := len(s.unbound) > 0
			s.mu.Unlock()
			if !pending {
				select {
				case <-ctx.Done():
					return
				case <-s.kick:
				}
			}
		}
	}
}

// Ready says whether the pods of the node are listed (ErrNotSynced if not,
// with the last error).
func (s *Source) Ready() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.synced {
		return nil
	}
	if s.lastErr != nil {
		return fmt.Errorf("kubernetes: node %s: %w: %w", s.opts.Node, ErrNotSynced, s.lastErr)
	}
	return fmt.Errorf("kubernetes: node %s: %w", s.opts.Node, ErrNotSynced)
}

// reconcile makes the whole set of workloads from the informer's cache and
// gives it to the store.
func (s *Source) reconcile() {
	objs := s.informer.GetStore().List()
	ws := make([]daemon.Workload, 0, len(objs))
	seen := map[types.UID]bool{}
	unbound := map[string]string{}
	var pods []*corev1.Pod
	for _, o := range objs {
		if p, ok := o.(*corev1.Pod); ok {
			pods = append(pods, p)
		}
	}
	for _, p := range s.oneByAddress(pods) {
		m, _ := Map(p, s.opts.Node)
		seen[p.UID] = true
		s.noteSkipped(p, m.Skipped)
		w := m.Workload
		var why string
		w.Bound, why = s.bindingOf(p.UID, netip.MustParseAddr(w.Address))
		if why != "" {
			unbound[w.Name] = why
		}
		ws = append(ws, w)
	}
	s.mu.Lock()
	for uid := range s.bindings {
		if !seen[uid] {
			delete(s.bindings, uid)
			delete(s.skipped, uid)
		}
	}
	for name, why := range unbound {
		if s.unbound[name] != why {
			s.log.Warn("pod workload: its host-side interface is not found yet; the agent binds its address by the rule of address workloads meanwhile",
				zap.String("workload", name), zap.String("why", why))
		}
	}
	s.unbound = unbound
	s.mu.Unlock()
	if err := s.opts.Store.ReplaceWorkloads(daemon.SourceKubernetes, ws); err != nil {
		s.log.Error("pod workloads not all applied", zap.Error(err))
	}
}

// oneByAddress returns the pods that are workloads, at most one per
// address. Two running pods with one address happen when the CNI gives a
// deleted pod's address to a new pod while the old one is still
// terminating: the one not being deleted has it. Two live pods with one
// address are a fault of the CNI (or a lie in a pod's status): neither is
// a workload (fail closed), and it is logged.
func (s *Source) oneByAddress(pods []*corev1.Pod) []*corev1.Pod {
	byAddr := map[string][]*corev1.Pod{}
	var addrs []string
	for _, p := range pods {
		m, why := Map(p, s.opts.Node)
		if why != "" {
			continue
		}
		a := m.Workload.Address
		if byAddr[a] == nil {
			addrs = append(addrs, a)
		}
		byAddr[a] = append(byAddr[a], p)
	}
	var out []*corev1.Pod
	dupes := map[string]string{}
	for _, a := range addrs {
		ps := byAddr[a]
		if len(ps) > 1 {
			var live []*corev1.Pod
			for _, p := range ps {
				if p.DeletionTimestamp == nil {
					live = append(live, p)
				}
			}
			ps = live
		}
		switch len(ps) {
		case 0:
		case 1:
			out = append(out, ps[0])
		default:
			names := make([]string, 0, len(ps))
			for _, p := range ps {
				names = append(names, p.Namespace+"/"+p.Name)
			}
			sort.Strings(names) // the informer's store lists in no order
			dupes[a] = fmt.Sprint(names)
			if s.dupes[a] != dupes[a] {
				s.log.Error("several running pods have one address: none of them is a workload until one is left", zap.String("address", a), zap.Strings("pods", names))
			}
		}
	}
	s.dupes = dupes
	return out
}

// bindingOf returns where the pod's address was found, looking for it if
// it is new: once found, a pod's interface is kept while its address is
// (as an address workload's binding is), so that a neighbour announcing
// the address later cannot move it.
func (s *Source) bindingOf(uid types.UID, addr netip.Addr) (*daemon.Binding, string) {
	s.mu.Lock()
	cur, ok := s.bindings[uid]
	s.mu.Unlock()
	if ok && cur.addr == addr && cur.binding != nil {
		return cur.binding, ""
	}
	b, err := s.opts.Resolve(addr)
	if err != nil {
		return nil, err.Error()
	}
	s.mu.Lock()
	s.bindings[uid] = podIface{addr: addr, binding: b}
	s.mu.Unlock()
	return b, ""
}

// noteSkipped logs the labels of a pod that are no attributes, once per change.
func (s *Source) noteSkipped(p *corev1.Pod, skipped []string) {
	key := fmt.Sprint(skipped)
	s.mu.Lock()
	old, ok := s.skipped[p.UID]
	s.skipped[p.UID] = key
	s.mu.Unlock()
	if len(skipped) > 0 && (!ok || old != key) {
		s.log.Warn("pod labels left out of its workload's attributes", zap.String("namespace", p.Namespace),
			zap.String("pod", p.Name), zap.Strings("labels", skipped))
	}
}
