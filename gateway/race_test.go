//go:build race

package gateway

// raceEnabled: the race detector shadows memory, so RSS bounds do not hold.
const raceEnabled = true
