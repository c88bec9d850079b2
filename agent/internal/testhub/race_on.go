//go:build race

package testhub

// Slowdown is how much slower code runs in this test binary than in a
// normal build: the race detector makes it 2 to 20 times slower, so a test
// that asserts a time bound (a promise such as "within a second") scales it
// by this.
const Slowdown = 5
