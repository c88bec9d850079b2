package relay

import "testing"

// TestPunchAddr: a punch address from the hub is used only if it is an IP
// and a port not 0; an IPv4-mapped address is unmapped.
func TestPunchAddr(t *testing.T) {
	for in, want := range map[string]string{
		"198.18.0.3:40001":          "198.18.0.3:40001",
		"[::ffff:198.18.0.3]:40001": "198.18.0.3:40001",
		"[2001:db8::1]:443":         "[2001:db8::1]:443",
		"198.18.0.3:0":              "invalid AddrPort",
		"198.18.0.3:65536":          "invalid AddrPort",
		"hub.example:443":           "invalid AddrPort",
		"":                          "invalid AddrPort",
	} {
		if got := punchAddr(in).String(); got != want {
			t.Errorf("punchAddr(%q) = %s, want %s", in, got, want)
		}
	}
}
