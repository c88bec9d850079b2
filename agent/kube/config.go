package kube

import (
	"fmt"

	"github.com/go-logr/zapr"
	"go.uber.org/zap"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/klog/v2"
)

// Client makes the client of the API server: from kubeconfig if it is
// set, else from the pod's service account (rest.InClusterConfig: the
// agent runs in a pod). It returns the API server's address too.
func Client(kubeconfig string) (kubernetes.Interface, string, error) {
	var (
		cfg *rest.Config
		err error
	)
	if kubeconfig != "" {
		cfg, err = clientcmd.BuildConfigFromFlags("", kubeconfig)
		if err != nil {
			return nil, "", fmt.Errorf("read --kubeconfig %s: %w", kubeconfig, err)
		}
	} else if cfg, err = rest.InClusterConfig(); err != nil {
		return nil, "", fmt.Errorf("kubernetes: not in a pod with a service account, and no --kubeconfig given: %w", err)
	}
	cfg.UserAgent = "sluice-agent"
	c, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return nil, "", fmt.Errorf("make the Kubernetes client for %s: %w", cfg.Host, err)
	}
	return c, cfg.Host, nil
}

// LogTo sends what client-go logs (through klog, a process-wide logger) to
// log, so that nothing is written behind the agent's logging's back.
func LogTo(log *zap.Logger) {
	klog.SetLogger(zapr.NewLogger(log.Named("client-go")))
}
