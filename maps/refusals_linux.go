package maps

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"time"

	"github.com/cilium/ebpf/ringbuf"

	"github.com/sluicehq/sluice/loader"
)

// ErrClosed means the Refusals reader was closed.
var ErrClosed = errors.New("refusals reader closed")

// Refusals reads the refusals ring buffer, into which the TC program writes
// an event for every SYN it refuses. The program never waits for it: when
// the reader falls behind and the ring is full, the kernel drops events.
type Refusals struct {
	r *ringbuf.Reader
}

// NewRefusals opens a reader on the data path's refusals ring; Close it.
func NewRefusals(m *loader.TcMaps) (*Refusals, error) {
	r, err := ringbuf.NewReader(m.Refusals)
	if err != nil {
		return nil, fmt.Errorf("open refusals ring: %w", err)
	}
	return &Refusals{r: r}, nil
}

// Read waits for the next refusal. It returns ErrClosed once Close was
// called, and os.ErrDeadlineExceeded past a deadline SetDeadline set.
func (r *Refusals) Read() (Refusal, error) {
	rec, err := r.r.Read()
	switch {
	case errors.Is(err, ringbuf.ErrClosed):
		return Refusal{}, ErrClosed
	case err != nil:
		return Refusal{}, fmt.Errorf("read refusals ring: %w", err)
	}
	return decodeRefusal(rec.RawSample)
}

// SetDeadline makes Read return os.ErrDeadlineExceeded after t, once the
// ring is empty (tests).
func (r *Refusals) SetDeadline(t time.Time) { r.r.SetDeadline(t) }

// Close ends Read.
func (r *Refusals) Close() error { return r.r.Close() }

func decodeRefusal(b []byte) (Refusal, error) {
	var ev loader.TcRefusalEvent
	if err := binary.Read(bytes.NewReader(b), binary.NativeEndian, &ev); err != nil {
		return Refusal{}, fmt.Errorf("decode refusal of %d bytes: %w: %w", len(b), err, ErrInvalid)
	}
	return Refusal{
		Client:   netip.AddrPortFrom(addrOf(ev.Saddr), portOf(ev.Sport)),
		Service:  netip.AddrPortFrom(addrOf(ev.Daddr), portOf(ev.Dport)),
		Portal:   ev.Portal,
		Workload: ev.Workload,
		Ifindex:  ev.Ifindex,
		Reason:   RefusalReason(ev.Reason),
	}, nil
}
