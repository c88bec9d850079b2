package relay

import (
	"fmt"
	"slices"
	"testing"
)

func TestPublishable(t *testing.T) {
	got := publishable([]string{"db-inlet", `db-inlet == "true"`, "env == prod", "not valid ("})
	if want := []string{`db-inlet == "true"`, `env == "prod"`}; !slices.Equal(got, want) {
		t.Errorf("publishable: %q, want the distinct canonical forms %q", got, want)
	}
	if got := publishable(nil); got == nil || len(got) != 0 {
		t.Errorf("publishable(nil) = %#v, want an empty list (no outlet), not nil", got)
	}
	var many []string
	for i := range MaxPublishedPolicies + 1 {
		many = append(many, fmt.Sprintf("n%d", i))
	}
	if got := publishable(many); !slices.Equal(got, []string{"true"}) {
		t.Errorf("publishable of %d policies: %q, want [true] (no filter)", len(many), got)
	}
}
