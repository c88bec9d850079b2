package loader

import (
	"reflect"
	"strings"
	"testing"
)

func TestParseBPFDevices(t *testing.T) {
	const mountinfo = `22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw
40 22 0:33 / /sys/fs/bpf rw,nosuid shared:14 - bpf bpf rw,mode=700
41 22 0:34 / /tmp/a\040b/bpffs rw master:3 - bpf bpf rw,mode=700
42 22 0:35 / /tmp/x rw - tmpfs tmpfs rw
43 22 x:y / /tmp/y rw - bpf bpf rw
garbage line
`
	got, err := parseBPFDevices(strings.NewReader(mountinfo))
	if err != nil {
		t.Fatal(err)
	}
	if want := map[string]bool{"0:33": true, "0:34": true}; !reflect.DeepEqual(got, want) {
		t.Errorf("parseBPFDevices = %v, want %v", got, want)
	}
}
