package loader

import (
	"fmt"

	"github.com/cilium/ebpf"
)

// Spec returns the data path's programs and maps as a CollectionSpec, with
// steer_mark set to mark. It needs no privilege and touches no kernel state.
func Spec(mark uint32) (*ebpf.CollectionSpec, error) {
	spec, err := LoadTc()
	if err != nil {
		return nil, fmt.Errorf("load data path spec: %w", err)
	}
	v, ok := spec.Variables[TcVarSteerMark]
	if !ok {
		return nil, fmt.Errorf("load data path spec: no variable %s", TcVarSteerMark)
	}
	if err := v.Set(mark); err != nil {
		return nil, fmt.Errorf("set %s: %w", TcVarSteerMark, err)
	}
	return spec, nil
}
