package kube

import (
	"context"
	"fmt"
	"time"

	"github.com/go-logr/zapr"
	"go.uber.org/zap"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/klog/v2"
)

// PodClient lists and watches the pods of every namespace: what the source
// asks of the API server. Client's REST client is one; so is client-go's
// typed Pods("") client (the tests give the fake clientset's).
//
// The agent speaks to the API server through a REST client whose scheme
// has core/v1 and meta/v1 only, never through client-go's clientset
// (k8s.io/client-go/kubernetes): the clientset's scheme registers every
// API group, its informer factory every informer, which made the agent's
// binary four times as large (TestLinksNoClientset).
type PodClient interface {
	List(ctx context.Context, opts metav1.ListOptions) (*corev1.PodList, error)
	Watch(ctx context.Context, opts metav1.ListOptions) (watch.Interface, error)
}

// Client makes the client of the API server: from kubeconfig if it is
// set, else from the pod's service account (rest.InClusterConfig: the
// agent runs in a pod). It returns the API server's address too.
func Client(kubeconfig string) (PodClient, string, error) {
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
	scheme := runtime.NewScheme()
	if err := corev1.AddToScheme(scheme); err != nil { // core/v1, with meta/v1's types in it
		return nil, "", fmt.Errorf("make the Kubernetes client's scheme: %w", err)
	}
	cfg.APIPath = "/api"
	cfg.GroupVersion = &corev1.SchemeGroupVersion
	cfg.NegotiatedSerializer = serializer.NewCodecFactory(scheme).WithoutConversion()
	c, err := rest.RESTClientFor(cfg)
	if err != nil {
		return nil, "", fmt.Errorf("make the Kubernetes client for %s: %w", cfg.Host, err)
	}
	return restPods{c}, cfg.Host, nil
}

// restPods lists and watches pods at /api/v1/pods, as the typed client does.
type restPods struct{ c rest.Interface }

func (p restPods) List(ctx context.Context, opts metav1.ListOptions) (*corev1.PodList, error) {
	var timeout time.Duration
	if opts.TimeoutSeconds != nil {
		timeout = time.Duration(*opts.TimeoutSeconds) * time.Second
	}
	l := &corev1.PodList{}
	err := p.c.Get().Resource("pods").VersionedParams(&opts, metav1.ParameterCodec).Timeout(timeout).Do(ctx).Into(l)
	return l, err
}

func (p restPods) Watch(ctx context.Context, opts metav1.ListOptions) (watch.Interface, error) {
	var timeout time.Duration
	if opts.TimeoutSeconds != nil {
		timeout = time.Duration(*opts.TimeoutSeconds) * time.Second
	}
	opts.Watch = true
	return p.c.Get().Resource("pods").VersionedParams(&opts, metav1.ParameterCodec).Timeout(timeout).Watch(ctx)
}

// LogTo sends what client-go logs (through klog, a process-wide logger) to
// log, so that nothing is written behind the agent's logging's back.
func LogTo(log *zap.Logger) {
	klog.SetLogger(zapr.NewLogger(log.Named("client-go")))
}
