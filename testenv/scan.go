package testenv

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"net"
	"sync"

	"github.com/gopacket/gopacket/pcapgo"
)

// A Scan watches one interface for byte strings in TCP payloads, as a
// Capture would see them, without writing the packets anywhere: it can run
// for as long as a soak or a chaos run does. Each frame is searched on its
// own, so a string split across two segments is missed there; a test looks
// for strings that recur (a query, a marker in a stream) and first proves,
// on a link where they must appear, that the scan sees them.
type Scan struct {
	handle  *pcapgo.EthernetHandle
	needles [][]byte
	done    chan struct{}

	mu      sync.Mutex // guards the following
	hits    []int64
	packets int64
	bytes   int64 // TCP payload bytes
}

// Scan starts looking for needles in the TCP payloads of the frames on
// ifname in ns (promiscuous, so that a bridge shows what it forwards).
// Stop, or Close of the env, ends it.
func (ns *NS) Scan(ifname string, needles ...string) (*Scan, error) {
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
		return nil, fmt.Errorf("scan %s in %s: %w", ifname, ns.name, err)
	}
	if err := h.SetPromiscuous(true); err != nil {
		h.Close()
		return nil, fmt.Errorf("scan %s in %s: set promiscuous: %w", ifname, ns.name, err)
	}
	if err := h.SetCaptureLength(snapLen); err != nil {
		h.Close()
		return nil, fmt.Errorf("scan %s in %s: %w", ifname, ns.name, err)
	}
	s := &Scan{handle: h, done: make(chan struct{}), hits: make([]int64, len(needles))}
	for _, n := range needles {
		s.needles = append(s.needles, []byte(n))
	}
	go s.read(ifindex)
	e := ns.env
	if err := e.track(func() { e.closers = append(e.closers, s) }, s.Close); err != nil {
		return nil, fmt.Errorf("scan %s in %s: %w", ifname, ns.name, err)
	}
	return s, nil
}

func (s *Scan) read(ifindex int) {
	defer close(s.done)
	for {
		data, ci, err := s.handle.ZeroCopyReadPacketData()
		if err != nil {
			return // closed
		}
		if ci.InterfaceIndex != ifindex {
			continue // before the socket was bound
		}
		payload := tcpPayload(data)
		s.mu.Lock()
		s.packets++
		s.bytes += int64(len(payload))
		for i, n := range s.needles {
			if bytes.Contains(payload, n) {
				s.hits[i]++
			}
		}
		s.mu.Unlock()
	}
}

// tcpPayload is the TCP payload of an Ethernet frame carrying IPv4, or nil.
func tcpPayload(f []byte) []byte {
	if len(f) < 14+20 || binary.BigEndian.Uint16(f[12:14]) != 0x0800 {
		return nil
	}
	ip := f[14:]
	ihl := int(ip[0]&0x0f) * 4
	if ip[0]>>4 != 4 || ip[9] != 6 || ihl < 20 || len(ip) < ihl+20 {
		return nil
	}
	tcp := ip[ihl:]
	off := int(tcp[12]>>4) * 4
	if off < 20 || len(tcp) < off {
		return nil
	}
	return tcp[off:]
}

// ScanResult is what a Scan saw so far.
type ScanResult struct {
	Packets, PayloadBytes int64
	Hits                  map[string]int64 // frames holding each needle
}

// Result returns what the scan saw so far.
func (s *Scan) Result() ScanResult {
	s.mu.Lock()
	defer s.mu.Unlock()
	r := ScanResult{Packets: s.packets, PayloadBytes: s.bytes, Hits: map[string]int64{}}
	for i, n := range s.needles {
		r.Hits[string(n)] = s.hits[i]
	}
	return r
}

// Close stops the scan. It is idempotent.
func (s *Scan) Close() error {
	s.handle.Close()
	<-s.done
	return nil
}
