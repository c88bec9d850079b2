package channel

import "sync"

// The read and write buffers: large ones hold two whole records (bufSize),
// small ones serve a direction woken from idle (smallSize). Pooled so that
// no record allocates on the hot path.
var (
	bigPool   = sync.Pool{New: func() any { b := make([]byte, bufSize); return &b }}
	smallPool = sync.Pool{New: func() any { b := make([]byte, smallSize); return &b }}
)

// getBuf returns a pooled buffer, large or small.
func getBuf(big bool) *[]byte {
	if big {
		return bigPool.Get().(*[]byte)
	}
	return smallPool.Get().(*[]byte)
}

// putBuf gives a buffer of getBuf back.
func putBuf(bp *[]byte) {
	if len(*bp) == bufSize {
		bigPool.Put(bp)
	} else {
		smallPool.Put(bp)
	}
}
