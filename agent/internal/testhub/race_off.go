//go:build !race

package testhub

// Slowdown is how much slower code runs in this test binary than in a
// normal build: 1 without the race detector.
const Slowdown = 1
