package server

import (
	"bytes"
	"encoding/json"
	"fmt"
	"reflect"
	"testing"
	"time"

	"github.com/sluicehq/sluice/agent/api/apitype"
	"github.com/sluicehq/sluice/agent/daemon"
	"github.com/sluicehq/sluice/agent/flowlog"
	"github.com/sluicehq/sluice/agent/portal"
)

// wirePairs are the agent's types the handler encodes or decodes, each with
// the apitype type clients use for the same JSON.
var wirePairs = []struct{ agent, client any }{
	{daemon.Status{}, apitype.Status{}},
	{flowlog.Event{}, apitype.FlowEvent{}},
	{daemon.RelayInfo{}, apitype.RelayInfo{}},
	{portal.InletSpec{}, apitype.InletSpec{}},
	{portal.OutletSpec{}, apitype.OutletSpec{}},
	{portal.InletInfo{}, apitype.Inlet{}},
	{portal.OutletInfo{}, apitype.Outlet{}},
	{daemon.InletInfo{}, apitype.InletInfo{}},
	{daemon.OutletInfo{}, apitype.OutletInfo{}},
	{daemon.Workload{}, apitype.Workload{}},
	{daemon.WorkloadInfo{}, apitype.WorkloadInfo{}},
	{daemon.DatapathStatus{}, apitype.DatapathStatus{}},
}

// TestWireTypesMatch: every field of each agent type, set, reaches the
// client's type and back as the same bytes, and the other way round; so do
// the zero values, and values whose slices, maps and pointers hold zero
// values (omitempty, omitzero at every depth). A field added on one side
// only, a renamed key, a changed type or order, fails here.
func TestWireTypesMatch(t *testing.T) {
	for _, p := range wirePairs {
		a, c := reflect.TypeOf(p.agent), reflect.TypeOf(p.client)
		t.Run(a.String(), func(t *testing.T) {
			for _, f := range []filling{zero, hollow, full} {
				checkSameWire(t, a, c, f)
				checkSameWire(t, c, a, f)
			}
		})
	}
	if daemon.StateRunning != apitype.StateRunning || daemon.StateFailed != apitype.StateFailed {
		t.Errorf("states %q %q, apitype's %q %q", daemon.StateRunning, daemon.StateFailed, apitype.StateRunning, apitype.StateFailed)
	}
}

// filling says how much of a value fill sets.
type filling int

const (
	zero   filling = iota // nothing
	hollow                // slices, maps and pointers, holding zero values
	full                  // every field, each to a value of its own
)

// checkSameWire encodes a value of type from, filled as f says, decodes it
// strictly into a value of type to, and checks that this one encodes to
// the same bytes.
func checkSameWire(t *testing.T, from, to reflect.Type, f filling) {
	t.Helper()
	v := reflect.New(from).Elem()
	if f != zero {
		n := 0
		fill(v, f, &n)
	}
	enc, err := json.Marshal(v.Interface())
	if err != nil {
		t.Fatalf("marshal %v: %v", from, err)
	}
	got := reflect.New(to)
	dec := json.NewDecoder(bytes.NewReader(enc))
	dec.DisallowUnknownFields()
	if err := dec.Decode(got.Interface()); err != nil {
		t.Fatalf("%v's JSON does not decode into %v: %v\n%s", from, to, err, enc)
	}
	again, err := json.Marshal(got.Elem().Interface())
	if err != nil {
		t.Fatalf("marshal %v: %v", to, err)
	}
	if !bytes.Equal(enc, again) {
		t.Errorf("%v's JSON comes back from %v changed:\n%s\n%s", from, to, enc, again)
	}
}

// fill sets every exported field reachable from v: one element in slices
// and maps, pointers to filled values, and if f is full, strings, numbers,
// booleans and times to values of their own, counting in n.
func fill(v reflect.Value, f filling, n *int) {
	*n++
	switch k := v.Kind(); {
	case f != full && k != reflect.Struct && k != reflect.Pointer && k != reflect.Slice && k != reflect.Map:
		return // a zero leaf (a map's key too: "")
	case k == reflect.Struct:
		if v.Type() == reflect.TypeOf(time.Time{}) {
			if f != full {
				return
			}
			v.Set(reflect.ValueOf(time.Date(2025, 1, 2, 3, 4, 5, *n, time.UTC)))
			return
		}
		for i := range v.NumField() {
			if v.Type().Field(i).IsExported() {
				fill(v.Field(i), f, n)
			}
		}
	case k == reflect.Pointer:
		v.Set(reflect.New(v.Type().Elem()))
		fill(v.Elem(), f, n)
	case k == reflect.Slice:
		v.Set(reflect.MakeSlice(v.Type(), 1, 1))
		fill(v.Index(0), f, n)
	case k == reflect.Map:
		key, e := reflect.New(v.Type().Key()).Elem(), reflect.New(v.Type().Elem()).Elem()
		fill(key, f, n)
		fill(e, f, n)
		v.Set(reflect.MakeMap(v.Type()))
		v.SetMapIndex(key, e)
	case k == reflect.String:
		v.SetString(fmt.Sprint("s", *n))
	case k == reflect.Bool:
		v.SetBool(true)
	case v.CanInt():
		v.SetInt(int64(*n))
	case v.CanUint():
		v.SetUint(uint64(*n))
	case v.CanFloat():
		v.SetFloat(float64(*n) + 0.5)
	default:
		panic(fmt.Sprintf("fill: no value for %v", v.Type()))
	}
}
