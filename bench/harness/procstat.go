package harness

import (
	"fmt"
	"os"
	"strconv"
	"strings"
)

// clockTicks is USER_HZ, the unit of /proc/PID/stat's times (100 on Linux).
const clockTicks = 100

// cpuTicks is utime+stime+cutime+cstime of pid from /proc/PID/stat, plus,
// with tree, the same for every live descendant (forking servers).
func cpuTicks(pid int, tree bool) (uint64, error) {
	total, err := statTicks(pid)
	if err != nil {
		return 0, err
	}
	if !tree {
		return total, nil
	}
	for _, c := range descendants(pid) {
		if t, err := statTicks(c); err == nil { // it may have gone
			total += t
		}
	}
	return total, nil
}

// statTicks reads fields 14-17 (utime, stime, cutime, cstime).
func statTicks(pid int) (uint64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, fmt.Errorf("read cpu time: %w", err)
	}
	return sumStat(string(b), 11, 15)
}

// childTicks reads fields 16-17 (cutime, cstime) of a /proc/PID/stat line:
// the CPU time of the children the process waited for.
func childTicks(stat string) (uint64, error) { return sumStat(stat, 13, 15) }

// sumStat adds the fields [from, to) of a /proc/PID/stat line, counted from
// field 3 (state).
func sumStat(s string, from, to int) (uint64, error) {
	// The command name (field 2) may hold spaces: split after its ')'.
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0, fmt.Errorf("read cpu time: bad stat line %q", s)
	}
	f := strings.Fields(s[i+1:]) // f[0] is field 3 (state)
	if len(f) < to {
		return 0, fmt.Errorf("read cpu time: short stat line %q", s)
	}
	var total uint64
	for _, k := range f[from:to] {
		v, err := strconv.ParseInt(k, 10, 64)
		if err != nil {
			return 0, fmt.Errorf("read cpu time: %w", err)
		}
		total += uint64(v)
	}
	return total, nil
}

// descendants lists the live descendants of pid (through every thread's
// children file).
func descendants(pid int) []int {
	var out []int
	queue := []int{pid}
	for len(queue) > 0 {
		p := queue[0]
		queue = queue[1:]
		tasks, _ := os.ReadDir(fmt.Sprintf("/proc/%d/task", p))
		for _, t := range tasks {
			b, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%s/children", p, t.Name()))
			if err != nil {
				continue
			}
			for _, c := range strings.Fields(string(b)) {
				if n, err := strconv.Atoi(c); err == nil {
					out = append(out, n)
					queue = append(queue, n)
				}
			}
		}
	}
	return out
}

// rssKiB is VmRSS of pid from /proc/PID/status.
func rssKiB(pid int) (float64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, fmt.Errorf("read rss: %w", err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			f := strings.Fields(rest)
			if len(f) == 0 {
				break
			}
			v, err := strconv.ParseFloat(f[0], 64)
			if err != nil {
				return 0, fmt.Errorf("read rss: %w", err)
			}
			return v, nil
		}
	}
	return 0, fmt.Errorf("read rss: no VmRSS for %d", pid)
}

// openFiles counts the open file descriptors of pid (-1 if unreadable).
func openFiles(pid int) int {
	fds, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	if err != nil {
		return -1
	}
	return len(fds)
}
