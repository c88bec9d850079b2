package channel

import (
	"bytes"
	"crypto/rand"
	"errors"
	"fmt"
	"sync"
	"syscall"
	"testing"
)

// An attack rewrites the records of one direction; the reading end must
// fail with want, and both applications must see their connection reset,
// never a clean end.
type attack struct {
	name string
	// tamper builds the proxy's tamper function for direction d of m;
	// other is an unrelated channel (another handshake).
	tamper func(t *testing.T, m, other *mitm, d dir) tamper
	want   error
}

// onData applies f to the first data record and passes the others.
func onData(f func(i uint64, rec []byte, emit func([]byte)) bool) func(*testing.T, *mitm, *mitm, dir) tamper {
	return func(*testing.T, *mitm, *mitm, dir) tamper {
		done := false
		return func(i uint64, typ byte, rec []byte, emit func([]byte)) bool {
			if typ != recData || done {
				emit(rec)
				return false
			}
			done = true
			return f(i, rec, emit)
		}
	}
}

// onEnd applies f to the end record and passes the others.
func onEnd(f func(t *testing.T, m, other *mitm, d dir, i uint64, rec []byte, emit func([]byte)) bool) func(*testing.T, *mitm, *mitm, dir) tamper {
	return func(t *testing.T, m, other *mitm, d dir) tamper {
		return func(i uint64, typ byte, rec []byte, emit func([]byte)) bool {
			if typ != recEnd {
				emit(rec)
				return false
			}
			return f(t, m, other, d, i, rec, emit)
		}
	}
}

func flip(pos func(rec []byte) int, mask byte) func(uint64, []byte, func([]byte)) bool {
	return func(_ uint64, rec []byte, emit func([]byte)) bool {
		rec[pos(rec)] ^= mask
		emit(rec)
		return false
	}
}

var attacks = []attack{
	{name: "drop the end record, then FIN", want: ErrTruncated,
		tamper: onEnd(func(_ *testing.T, _, _ *mitm, _ dir, _ uint64, _ []byte, _ func([]byte)) bool { return true })},
	{name: "cut inside the end record", want: ErrTruncated,
		tamper: onEnd(func(_ *testing.T, _, _ *mitm, _ dir, _ uint64, rec []byte, emit func([]byte)) bool {
			emit(rec[:hdrLen+3])
			return true
		})},
	{name: "drop a data record", want: ErrBadRecord,
		tamper: onData(func(uint64, []byte, func([]byte)) bool { return false })},
	{name: "reorder two records", want: ErrBadRecord,
		tamper: func(*testing.T, *mitm, *mitm, dir) tamper {
			var held []byte
			return func(_ uint64, typ byte, rec []byte, emit func([]byte)) bool {
				switch {
				case typ == recData && held == nil:
					held = rec
				case held != nil:
					emit(rec)
					emit(held)
					held = []byte{}
				default:
					emit(rec)
				}
				return false
			}
		}},
	{name: "duplicate a record", want: ErrBadRecord,
		tamper: onData(func(_ uint64, rec []byte, emit func([]byte)) bool { emit(rec); emit(rec); return false })},
	{name: "replay a data record before the end record", want: ErrBadRecord,
		tamper: func(*testing.T, *mitm, *mitm, dir) tamper {
			var first []byte
			return func(_ uint64, typ byte, rec []byte, emit func([]byte)) bool {
				if typ == recData && first == nil {
					first = rec
				}
				if typ == recEnd {
					emit(first)
				}
				emit(rec)
				return false
			}
		}},
	{name: "flip a ciphertext bit", want: ErrBadRecord,
		tamper: onData(flip(func([]byte) int { return hdrLen }, 0x01))},
	{name: "flip a tag bit", want: ErrBadRecord,
		tamper: onData(flip(func(rec []byte) int { return len(rec) - 1 }, 0x80))},
	{name: "flip a bit of the header's first byte", want: ErrBadRecord,
		tamper: onData(flip(func([]byte) int { return 0 }, 0x02))},
	{name: "flip a bit of the sealed type (data to control)", want: ErrBadRecord,
		tamper: onData(flip(func(rec []byte) int { return len(rec) - tagLen - 1 }, recData^recControl))},
	{name: "give a data record the header of an end record", want: ErrBadRecord,
		tamper: onData(func(_ uint64, rec []byte, emit func([]byte)) bool {
			l := 2 + tagLen
			rec[1], rec[2], rec[3] = byte(l>>16), byte(l>>8), byte(l)
			emit(rec)
			return false
		})},
	{name: "flip a length bit", want: ErrBadRecord,
		tamper: onData(flip(func([]byte) int { return 3 }, 0x01))},
	{name: "flip a bit of the end record's sealed type (end to data)", want: ErrBadRecord,
		tamper: onEnd(func(_ *testing.T, _, _ *mitm, _ dir, _ uint64, rec []byte, emit func([]byte)) bool {
			rec[len(rec)-tagLen-2] ^= recEnd ^ recData
			emit(rec)
			return false
		})},
	{name: "end record of the other direction", want: ErrBadRecord,
		tamper: onEnd(func(t *testing.T, m, _ *mitm, d dir, i uint64, _ []byte, emit func([]byte)) bool {
			emit(forge(t, m.secret(1-d), i, recEnd, nil))
			return false
		})},
	{name: "data record of the other direction", want: ErrBadRecord,
		tamper: func(t *testing.T, m, _ *mitm, d dir) tamper {
			return onData(func(i uint64, rec []byte, emit func([]byte)) bool {
				emit(forge(t, m.secret(1-d), i, recData, []byte("from the other direction")))
				return false
			})(t, m, nil, d)
		}},
	{name: "end record of another channel", want: ErrBadRecord,
		tamper: onEnd(func(t *testing.T, _, other *mitm, d dir, i uint64, _ []byte, emit func([]byte)) bool {
			emit(forge(t, other.secret(d), i, recEnd, nil))
			return false
		})},
	{name: "data record of another channel", want: ErrBadRecord,
		tamper: func(t *testing.T, m, other *mitm, d dir) tamper {
			return onData(func(i uint64, rec []byte, emit func([]byte)) bool {
				emit(forge(t, other.secret(d), i, recData, []byte("from another channel")))
				return false
			})(t, m, other, d)
		}},
}

// TestAttacksEndInReset runs each attack in each direction on the first
// stream of a fresh channel and on a warm channel's second stream, after an
// untouched stream that proves the harness carries both streams whole.
func TestAttacksEndInReset(t *testing.T) {
	request := make([]byte, 40<<10)
	rand.Read(request)
	answer := []byte("the answer, whole or not at all")
	other := newMITM(t)
	for _, a := range attacks {
		for _, d := range []dir{toServer, toClient} {
			for _, warm := range []bool{false, true} {
				t.Run(fmt.Sprintf("%s/%s/warm=%v", a.name, d, warm), func(t *testing.T) {
					m := newMITM(t)
					if warm {
						checkClean(t, m.stream(request, answer), request, answer)
					}
					m.setTamper(d, a.tamper(t, m, other, d))
					r := m.stream(request, answer)
					checkReset(t, r, d, a.want, request, answer)
					if m.client.Idle() {
						t.Error("the inlet's channel still counts as idle (warm) after the attack")
					}
				})
			}
		}
	}
}

// checkClean checks a stream that nobody touched.
func checkClean(t *testing.T, r streamResult, request, answer []byte) {
	t.Helper()
	if r.errA != nil || r.errB != nil || r.inletRes.Err != nil || r.outletRes.Err != nil {
		t.Fatalf("untouched stream: app A %v, app B %v, inlet %v, outlet %v", r.errA, r.errB, r.inletRes.Err, r.outletRes.Err)
	}
	if !bytes.Equal(r.gotB, request) || !bytes.Equal(r.gotA, answer) {
		t.Fatalf("untouched stream: B read %d bytes, A read %q", len(r.gotB), r.gotA)
	}
}

// checkReset checks a stream whose direction d was attacked: the reading
// agent fails with want and the reading application (and the sending one,
// while it still waits) sees a reset, after at most a prefix of what was
// sent.
func checkReset(t *testing.T, r streamResult, d dir, want error, request, answer []byte) {
	t.Helper()
	reader, readApp, got, sent := r.outletRes, r.errB, r.gotB, request
	if d == toClient {
		reader, readApp, got, sent = r.inletRes, r.errA, r.gotA, answer
	}
	if !errors.Is(reader.Err, want) {
		t.Errorf("the reading agent's pipe ended with %v, want %v", reader.Err, want)
	}
	if !errors.Is(readApp, syscall.ECONNRESET) {
		t.Errorf("the reading application's connection ended with %v, want a reset", readApp)
	}
	if !bytes.HasPrefix(sent, got) {
		t.Errorf("the reading application got %d bytes that are not a prefix of what was sent", len(got))
	}
	if d == toServer {
		// App A still waits for the answer: its connection is reset too.
		if !errors.Is(r.errA, syscall.ECONNRESET) || len(r.gotA) != 0 {
			t.Errorf("the inlet's application read %q and then %v, want a reset and nothing", r.gotA, r.errA)
		}
	} else if r.errB != nil || !bytes.Equal(r.gotB, request) {
		// The request crossed untouched before the answer was attacked.
		t.Errorf("the outlet's application read %d bytes and then %v, want the request whole", len(r.gotB), r.errB)
	}
}

// TestReplayAcrossWarmStreams: records of a warm channel's earlier stream,
// its data or its end record, are refused in a later stream: the record
// counter runs on across streams.
func TestReplayAcrossWarmStreams(t *testing.T) {
	request := bytes.Repeat([]byte("warm "), 2000)
	answer := []byte("ok")
	for _, typ := range []byte{recData, recEnd} {
		for _, d := range []dir{toServer, toClient} {
			t.Run(fmt.Sprintf("type %d/%s", typ, d), func(t *testing.T) {
				m := newMITM(t)
				var old []byte
				m.setTamper(d, func(_ uint64, rtyp byte, rec []byte, emit func([]byte)) bool {
					if rtyp == typ && old == nil {
						old = rec
					}
					emit(rec)
					return false
				})
				checkClean(t, m.stream(request, answer), request, answer)
				if old == nil {
					t.Fatalf("the first stream had no record of type %d", typ)
				}
				m.setTamper(d, func(_ uint64, rtyp byte, rec []byte, emit func([]byte)) bool {
					if rtyp == typ {
						emit(old)
					} else {
						emit(rec)
					}
					return false
				})
				checkReset(t, m.stream(request, answer), d, ErrBadRecord, request, answer)
			})
		}
	}
}

// TestNoKeyNonceReuse drives records across many key generations (one every
// 4 records, through the test hook; production moves every 2^20), over
// several streams of each of two warm channels, and opens every record on
// the wire with the key and nonce docs/channel.md specifies: every record
// opens with them, and no (key, nonce) pair is used twice, in either
// direction of either channel.
func TestNoKeyNonceReuse(t *testing.T) {
	const shift, streams = 2, 6
	var mu sync.Mutex
	seen := map[string]string{}
	for ch := range 2 {
		m := newMITM(t)
		for _, d := range []*direction{m.client.out, m.client.in, m.server.out, m.server.in} {
			d.shift = shift
		}
		a := &audit{t: t, mu: &mu, shift: shift, seen: seen, name: fmt.Sprintf("channel %d", ch), km: m.km}
		m.mu.Lock()
		m.audit = a
		m.mu.Unlock()
		for s := range streams {
			request := make([]byte, 1000+s*70000) // up to several records each
			rand.Read(request)
			answer := bytes.Repeat([]byte{byte(s)}, 300000-s*40000)
			checkClean(t, m.stream(request, answer), request, answer)
		}
		// Each stream has at least 3 records each way (control, data, end).
		mu.Lock()
		for d := range 2 {
			if a.count[d] < 3*streams || a.gens[d] < (3*streams-1)>>shift {
				t.Errorf("channel %d %s: %d records in %d generations, want at least %d records", ch, dir(d), a.count[d], a.gens[d]+1, 3*streams)
			}
			t.Logf("channel %d %s: %d records, %d key generations", ch, dir(d), a.count[d], a.gens[d]+1)
		}
		mu.Unlock()
	}
	if len(seen) == 0 {
		t.Fatal("the audit saw no record")
	}
}

// TestInjectedAlert: someone on the path puts a TLS alert where a
// direction's first record of a stream should be, and cuts. On a fresh
// channel (sequence number 0) the reader reports a TLS alert, on a warm one
// a bad record; never a policy refusal, which only an authenticated record
// can carry. Both applications see a reset.
func TestInjectedAlert(t *testing.T) {
	alert := append([]byte{tlsAppData, 3, 3, 0, 19}, make([]byte, 19)...)
	request, answer := []byte("request"), []byte("answer")
	for _, d := range []dir{toServer, toClient} {
		for _, warm := range []bool{false, true} {
			t.Run(fmt.Sprintf("%s/warm=%v", d, warm), func(t *testing.T) {
				m := newMITM(t)
				want := ErrPeerAlert
				if warm {
					checkClean(t, m.stream(request, answer), request, answer)
					want = ErrBadRecord
				}
				m.setTamper(d, func(_ uint64, _ byte, _ []byte, emit func([]byte)) bool {
					emit(alert)
					return true
				})
				r := m.stream(request, answer)
				reader := r.outletRes.Err
				if d == toClient {
					reader = r.inletRes.Err
				}
				if !errors.Is(reader, want) || errors.Is(reader, ErrDenied) {
					t.Errorf("the reading agent's pipe ended with %v, want %v (and never %v)", reader, want, ErrDenied)
				}
				if !errors.Is(r.errA, syscall.ECONNRESET) || len(r.gotA) != 0 {
					t.Errorf("the inlet's application read %q and then %v, want a reset and nothing", r.gotA, r.errA)
				}
			})
		}
	}
}
