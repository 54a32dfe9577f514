//go:build !race

package offload

// raceEnabled: the race detector makes sync.Pool drop items at random.
const raceEnabled = false
