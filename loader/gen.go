package loader

// The BPF objects are built with the clang that Debian 12 ships (clang-14,
// 14.0.6; `make generate` checks the version) and committed with their
// bindings, and the MAX_* limits that size their maps with limits.go
// (internal/genlimits). CI rebuilds them and fails on any difference.
//
//go:generate go tool bpf2go -cc clang-14 -strip llvm-strip-14 -cflags "-O2 -g -Wall -Werror" -tags linux -target bpfel -type service_key -type service_value -type endpoint_key -type verdict_key -type portal_counters -type listener_addr -type flow_key -type flow_value -type refusal_event -type refusal_reason Tc ../bpf/tc.c -- -I../bpf/include -I/usr/include/x86_64-linux-gnu
//go:generate go tool bpf2go -cc clang-14 -strip llvm-strip-14 -cflags "-O2 -g -Wall -Werror" -tags linux -target bpfel -type sock_key Sockops ../bpf/sockops.c -- -I../bpf/include -I/usr/include/x86_64-linux-gnu
//go:generate go tool bpf2go -cc clang-14 -strip llvm-strip-14 -cflags "-O2 -g -Wall -Werror" -tags linux -target bpfel -type pair_flow -type pair_hub Relay ../bpf/relay.c -- -I../bpf/include -I/usr/include/x86_64-linux-gnu
//go:generate go run ./internal/genlimits -o limits.go ../bpf/include/sluice.h
