package loader

import "io"

// closeOnError closes c if the function that deferred it returns an error
// in *err: a constructor that opens several handles defers it once, right
// after the first, instead of closing by hand in each error branch (as
// cilium/ebpf's NewCollection and tubular's CreateDispatcher do). The
// close's own error is dropped: the caller gets the one that made it fail.
func closeOnError(err *error, c io.Closer) {
	if *err != nil {
		c.Close()
	}
}
