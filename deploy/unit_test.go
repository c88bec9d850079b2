package deploy_test

import (
	"bufio"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/sluicehq/sluice/loader"
)

// unit is a systemd unit file: each section's keys with their values in
// order (a key given twice, such as LoadCredential=, has two).
type unit map[string]map[string][]string

// readUnit parses a unit file: sections, KEY=VALUE lines, comments; it
// fails on what it does not understand (line continuations included: the
// units here need none).
func readUnit(t *testing.T, path string) unit {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	u := unit{}
	section := ""
	sc := bufio.NewScanner(f)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		switch {
		case line == "" || line[0] == '#' || line[0] == ';':
		case strings.HasPrefix(line, "[") && strings.HasSuffix(line, "]"):
			section = line[1 : len(line)-1]
			u[section] = map[string][]string{}
		case strings.HasSuffix(line, `\`):
			t.Fatalf("%s:%d: a continued line; keep each directive on one line", path, n)
		default:
			k, v, ok := strings.Cut(line, "=")
			if !ok || section == "" {
				t.Fatalf("%s:%d: cannot parse %q", path, n, line)
			}
			k = strings.TrimSpace(k)
			u[section][k] = append(u[section][k], strings.TrimSpace(v))
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return u
}

// one returns the only value of a [Service] key, failing if it has none or
// several.
func (u unit) one(t *testing.T, key string) string {
	t.Helper()
	v := u["Service"][key]
	if len(v) != 1 {
		t.Fatalf("[Service] %s: %d values %q, want one", key, len(v), v)
	}
	return v[0]
}

// capabilities is the unit's CapabilityBoundingSet, lower case without
// the CAP_ prefix (as setpriv takes them), sorted.
func (u unit) capabilities(t *testing.T) []string {
	t.Helper()
	var caps []string
	for _, c := range strings.Fields(u.one(t, "CapabilityBoundingSet")) {
		if !strings.HasPrefix(c, "CAP_") {
			t.Fatalf("CapabilityBoundingSet: %q is not a capability name", c)
		}
		caps = append(caps, strings.ToLower(strings.TrimPrefix(c, "CAP_")))
	}
	slices.Sort(caps)
	return caps
}

var unitVar = regexp.MustCompile(`\$\{([A-Z_]+)\}|\$([A-Z_]+)|%[a-zA-Z%]`)

// execStart splits ExecStart into argv, as systemd does for the simple
// lines used here (no quotes, no prefixes such as "-" or "+"), and
// replaces ${VAR} with env: a variable env lacks or a specifier fails.
func (u unit) execStart(t *testing.T, env map[string]string) []string {
	t.Helper()
	line := u.one(t, "ExecStart")
	if strings.ContainsAny(line, `"'\`) || strings.ContainsAny(line[:1], "-+!@:") {
		t.Fatalf("ExecStart %q: quotes, escapes and prefixes are not parsed here", line)
	}
	var argv []string
	for _, w := range strings.Fields(line) {
		var missing []string
		w = unitVar.ReplaceAllStringFunc(w, func(m string) string {
			name := strings.Trim(m, "${}")
			v, ok := env[name]
			if !ok {
				missing = append(missing, m)
			}
			return v
		})
		if len(missing) > 0 {
			t.Fatalf("ExecStart %q: no value for %v", line, missing)
		}
		argv = append(argv, w)
	}
	return argv
}

// environment is the unit's Environment= assignments.
func (u unit) environment(t *testing.T) map[string]string {
	t.Helper()
	env := map[string]string{}
	for _, line := range u["Service"]["Environment"] {
		for _, kv := range strings.Fields(line) {
			k, v, ok := strings.Cut(kv, "=")
			if !ok {
				t.Fatalf("Environment=%s: %q is not KEY=VALUE", line, kv)
			}
			env[k] = v
		}
	}
	return env
}

// credential returns the path LoadCredential= reads credential id from
// and SetCredential='s fallback value, unescaped as systemd does.
func (u unit) credential(t *testing.T, id string) (path, fallback string) {
	t.Helper()
	for _, v := range u["Service"]["LoadCredential"] {
		if k, p, _ := strings.Cut(v, ":"); k == id {
			path = p
		}
	}
	for _, v := range u["Service"]["SetCredential"] {
		if k, val, _ := strings.Cut(v, ":"); k == id {
			s, err := strconv.Unquote(`"` + val + `"`)
			if err != nil {
				t.Fatalf("SetCredential=%s: %v", v, err)
			}
			fallback = s
		}
	}
	if path == "" {
		t.Fatalf("no LoadCredential=%s:PATH", id)
	}
	return path, fallback
}

// setprivArgs runs a command as systemd runs the unit's: root with the
// capability bounding set only (root's permitted and effective sets are
// then that set), no inheritable or ambient capabilities, no new
// privileges.
func setprivArgs(caps []string) []string {
	bound := "-all"
	for _, c := range caps {
		bound += ",+" + c
	}
	return []string{"--bounding-set=" + bound, "--inh-caps=-all", "--ambient-caps=-all", "--no-new-privs", "--"}
}

func TestUnitParse(t *testing.T) {
	u := readUnit(t, "systemd/sluice-agent.service")
	argv := u.execStart(t, map[string]string{"STATE_DIRECTORY": "/s", "RUNTIME_DIRECTORY": "/r", "CREDENTIALS_DIRECTORY": "/c"})
	if got := strings.Join(argv, " "); !strings.Contains(got, "--state-dir /s --api /r/agent.sock --ticket @/c/ticket") {
		t.Errorf("ExecStart = %s", got)
	}
	if _, fb := u.credential(t, "ticket"); strings.TrimSpace(fb) != "" {
		t.Errorf("the ticket's fallback credential is %q, want blank (no ticket)", fb)
	}
}

// TestUnitCapabilities: the agent's unit grants loader.Capabilities, the
// set docs/deploy.md's table explains, and no others.
func TestUnitCapabilities(t *testing.T) {
	u := readUnit(t, "systemd/sluice-agent.service")
	if got, want := u.capabilities(t), capNames(loader.Capabilities); !slices.Equal(got, want) {
		t.Errorf("CapabilityBoundingSet = %v, want %v (loader.Capabilities)", got, want)
	}
	if v := u.one(t, "AmbientCapabilities"); v != "" {
		t.Errorf("AmbientCapabilities=%s: the agent runs as root, with the bounding set only", v)
	}
	for _, u := range []string{"sluice-hub", "sluice-authority"} {
		if v := readUnit(t, "systemd/"+u+".service").one(t, "CapabilityBoundingSet"); v != "" {
			t.Errorf("%s: CapabilityBoundingSet=%s, want none", u, v)
		}
	}
	doc, err := os.ReadFile("../docs/deploy.md")
	if err != nil {
		t.Fatal(err)
	}
	if want := "The set: `" + strings.Join(loader.Capabilities, " ") + "`"; !strings.Contains(string(doc), want) {
		t.Errorf("docs/deploy.md does not say %q", want)
	}
}

// capNames turns CAP_X names into setpriv's, sorted.
func capNames(caps []string) []string {
	var out []string
	for _, c := range caps {
		out = append(out, strings.ToLower(strings.TrimPrefix(c, "CAP_")))
	}
	slices.Sort(out)
	return out
}
