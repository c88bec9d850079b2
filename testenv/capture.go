package testenv

import (
	"bufio"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gopacket/gopacket/layers"
	"github.com/gopacket/gopacket/pcapgo"
)

// Capture timings and sizes.
const (
	snapLen = 262144 // libpcap's maximum: segmentation offload hands over frames of up to 64 KiB and more
	// Stop closes the socket once no packet came for drainQuiet (or after
	// drainMax), so that packets still queued on it are written too.
	drainQuiet = 50 * time.Millisecond
	drainMax   = time.Second
)

// Capture records every frame seen on one interface to a pcap file.
type Capture struct {
	path   string
	handle *pcapgo.EthernetHandle
	file   *os.File
	done   chan struct{} // closed when the reader goroutine ended
	last   atomic.Int64  // unix nanoseconds of the last packet read

	stopOnce sync.Once
	stopErr  error
	readErr  error // set by the reader goroutine before done
}

// Capture starts capturing on ifname in ns (an AF_PACKET socket opened
// inside ns, in promiscuous mode so that a bridge shows what it forwards)
// into the pcap file path; "" means a file in the env's directory. Stop, or
// Close of the env, ends it.
func (ns *NS) Capture(ifname, path string) (*Capture, error) {
	if path == "" {
		path = filepath.Join(ns.env.dir, "captures", ns.name+"-"+ifname+".pcap")
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return nil, fmt.Errorf("capture on %s: %w", ifname, err)
	}
	var h *pcapgo.EthernetHandle
	var ifindex int
	err := ns.Do(func() error {
		ifc, err := net.InterfaceByName(ifname)
		if err != nil {
			return err
		}
		ifindex = ifc.Index
		h, err = pcapgo.NewEthernetHandle(ifname)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("capture on %s in %s: %w", ifname, ns.name, err)
	}
	c, err := startCapture(h, ifindex, path)
	if err != nil {
		h.Close()
		return nil, fmt.Errorf("capture on %s in %s: %w", ifname, ns.name, err)
	}
	e := ns.env
	if err := e.track(func() { e.captures = append(e.captures, c) }, c.Stop); err != nil {
		return nil, fmt.Errorf("capture on %s in %s: %w", ifname, ns.name, err)
	}
	return c, nil
}

// startCapture writes the pcap header and starts the reader goroutine.
func startCapture(h *pcapgo.EthernetHandle, ifindex int, path string) (*Capture, error) {
	if err := h.SetPromiscuous(true); err != nil {
		return nil, fmt.Errorf("set promiscuous: %w", err)
	}
	if err := h.SetCaptureLength(snapLen); err != nil {
		return nil, fmt.Errorf("set capture length: %w", err)
	}
	f, err := os.Create(path)
	if err != nil {
		return nil, fmt.Errorf("create pcap: %w", err)
	}
	bw := bufio.NewWriterSize(f, 1<<16)
	w := pcapgo.NewWriterNanos(bw)
	if err := w.WriteFileHeader(snapLen, layers.LinkTypeEthernet); err != nil {
		f.Close()
		return nil, fmt.Errorf("write pcap header: %w", err)
	}
	c := &Capture{path: path, handle: h, file: f, done: make(chan struct{})}
	c.last.Store(time.Now().UnixNano())
	go c.read(w, bw, ifindex)
	return c, nil
}

// read copies packets to the pcap writer until the socket is closed.
func (c *Capture) read(w *pcapgo.Writer, bw *bufio.Writer, ifindex int) {
	defer close(c.done)
	for {
		data, ci, err := c.handle.ZeroCopyReadPacketData()
		if err != nil {
			break // closed by Stop: the only way out
		}
		c.last.Store(time.Now().UnixNano())
		// The socket sees every interface until it is bound: skip those.
		if ci.InterfaceIndex != ifindex {
			continue
		}
		if err := w.WritePacket(ci, data); err != nil && c.readErr == nil {
			c.readErr = fmt.Errorf("write pcap: %w", err)
		}
	}
	if err := bw.Flush(); err != nil && c.readErr == nil {
		c.readErr = fmt.Errorf("flush pcap: %w", err)
	}
}

// Path is the pcap file.
func (c *Capture) Path() string { return c.path }

// Stop lets the socket drain, closes it, and flushes and closes the pcap
// file. It is idempotent.
func (c *Capture) Stop() error {
	c.stopOnce.Do(func() {
		deadline := time.Now().Add(drainMax)
		for time.Now().Before(deadline) {
			if time.Since(time.Unix(0, c.last.Load())) >= drainQuiet {
				break
			}
			time.Sleep(drainQuiet / 5)
		}
		err := c.handle.Close()
		<-c.done
		c.stopErr = errors.Join(err, c.readErr, c.file.Close())
		if c.stopErr != nil {
			c.stopErr = fmt.Errorf("stop capture %s: %w", c.path, c.stopErr)
		}
	})
	return c.stopErr
}
