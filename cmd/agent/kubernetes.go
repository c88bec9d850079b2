package main

import (
	"context"
	"os"
	"sync"

	"github.com/spf13/cobra"
	"go.uber.org/zap"

	"github.com/sluicehq/sluice/agent/daemon"
	"github.com/sluicehq/sluice/agent/kube"
	"github.com/sluicehq/sluice/cmd/internal/cli"
)

// kubeFlags are `agent run --kubernetes` and its settings: the pods of the
// node as workloads (package kube, docs/kubernetes-workloads.md).
type kubeFlags struct {
	enabled          bool
	node, kubeconfig string
}

func (k *kubeFlags) register(cmd *cobra.Command) {
	cmd.Flags().BoolVar(&k.enabled, "kubernetes", false, "make the pods of this Kubernetes node workloads (k8s:<label>, k8s:namespace, k8s:serviceaccount and k8s:pod attributes), watched on the API server (docs/kubernetes-workloads.md)")
	cmd.Flags().StringVar(&k.node, "node-name", "", "with --kubernetes, the node whose pods are workloads (default $NODE_NAME, which a DaemonSet sets from spec.nodeName)")
	cmd.Flags().StringVar(&k.kubeconfig, "kubeconfig", "", "with --kubernetes, the kubeconfig file of the API server (default: the pod's service account, in-cluster)")
}

// check fills in the node name and refuses settings that cannot work.
func (k *kubeFlags) check() error {
	if !k.enabled {
		if k.node != "" || k.kubeconfig != "" {
			return cli.Usagef("--node-name and --kubeconfig need --kubernetes")
		}
		return nil
	}
	if k.node == "" {
		k.node = os.Getenv("NODE_NAME")
	}
	if k.node == "" {
		return cli.Usagef("--kubernetes: no node name: give --node-name or set $NODE_NAME (in a DaemonSet, from the downward API: fieldRef spec.nodeName)")
	}
	return nil
}

// pods is the running pod source, or none.
type pods struct {
	src    *kube.Source
	cancel context.CancelFunc
	once   sync.Once
	done   chan struct{}
}

// start starts watching the node's pods, if --kubernetes. An API server
// that cannot be reached is no error here: the source says why in the log
// and keeps the agent not ready until it lists the pods.
func (k *kubeFlags) start(ctx context.Context, a *daemon.Agent, log *zap.Logger) (*pods, error) {
	if !k.enabled {
		return &pods{}, nil
	}
	kube.LogTo(log)
	c, server, err := kube.Client(k.kubeconfig)
	if err != nil {
		return nil, err
	}
	src, err := kube.New(kube.Options{Client: c, Node: k.node, Store: a, Log: log.Named("kubernetes"), Server: server})
	if err != nil {
		return nil, err
	}
	log.Info("watching the pods of this node", zap.String("node", k.node), zap.String("server", server))
	ctx, cancel := context.WithCancel(ctx)
	p := &pods{src: src, cancel: cancel, done: make(chan struct{})}
	go func() { defer close(p.done); src.Run(ctx) }()
	return p, nil
}

// ready is nil without --kubernetes, else whether the pods are listed.
func (p *pods) ready() error {
	if p.src == nil {
		return nil
	}
	return p.src.Ready()
}

// stop stops watching and waits until the source gives the agent nothing more.
func (p *pods) stop() {
	if p.src == nil {
		return
	}
	p.once.Do(func() { p.cancel(); <-p.done })
}
