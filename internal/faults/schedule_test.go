// The soak's schedule: faults, and reindexes, drawn from a seed.

package faults

import (
	"cmp"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

type faultKind string

const (
	faultKillWorker faultKind = "kill -9 worker"
	faultTermAPI    faultKind = "SIGTERM api"
	faultKillNode   faultKind = "kill -9 NATS node"
	faultFullDisk   faultKind = "full disk under NATS node"
	faultStopOllama faultKind = "SIGSTOP Ollama"
	faultLockSQLite faultKind = "SQLite write lock"
	runReindex      faultKind = "api reindex --all" // load, not a fault: scheduled so that a seed replays it
)

// faultKinds are the faults in the order the table lists them, with how
// often each is drawn, how long it lasts, and the time its resource needs
// after it to be whole again (a restarted process starting).
var faultKinds = []struct {
	kind     faultKind
	weight   int
	min, max time.Duration
	settle   time.Duration
}{
	{faultKillWorker, 3, time.Second, 6 * time.Second, 5 * time.Second},
	{faultTermAPI, 2, 0, 3 * time.Second, 30 * time.Second},
	{faultKillNode, 2, 2 * time.Second, 10 * time.Second, 10 * time.Second},
	{faultFullDisk, 2, 3 * time.Second, 10 * time.Second, 10 * time.Second},
	{faultStopOllama, 3, 2 * time.Second, 15 * time.Second, 3 * time.Second},
	{faultLockSQLite, 2, time.Second, 8 * time.Second, 2 * time.Second},
}

// soakShape is what the schedule draws targets from.
type soakShape struct {
	workers, nodes int // workers (each with its own Ollama); NATS nodes
	smallDiskNode  int // the node whose store is on a disk that can be filled
}

// planned is one entry: at At after the start, Kind on Target for For.
type planned struct {
	At     time.Duration
	Kind   faultKind
	Target int
	For    time.Duration
}

func (p planned) String() string {
	target := ""
	switch p.Kind {
	case faultKillWorker:
		target = fmt.Sprintf(" w%d", p.Target+1)
	case faultStopOllama:
		target = fmt.Sprintf(" of w%d", p.Target+1)
	case faultKillNode, faultFullDisk:
		target = fmt.Sprintf(" n%d", p.Target+1)
	}
	if p.Kind == runReindex {
		return fmt.Sprintf("%8s  %s", "+"+p.At.Round(100*time.Millisecond).String(), p.Kind)
	}
	return fmt.Sprintf("%8s  %s%s for %s", "+"+p.At.Round(100*time.Millisecond).String(), p.Kind, target, p.For.Round(100*time.Millisecond))
}

// resource is what a fault holds while it lasts; faults of one resource
// never overlap, faults of different ones may. The NATS nodes are one
// resource: one of three down or full at a time keeps the quorum (losing
// it is the fault suite's own scenario).
func (p planned) resource() string {
	switch p.Kind {
	case faultKillNode, faultFullDisk:
		return "nats"
	case faultKillWorker:
		return fmt.Sprintf("worker%d", p.Target)
	case faultStopOllama:
		return fmt.Sprintf("ollama%d", p.Target)
	}
	return string(p.Kind)
}

type schedule []planned

func (s schedule) String() string {
	var b strings.Builder
	for _, p := range s {
		b.WriteString(p.String() + "\n")
	}
	return b.String()
}

// newSchedule draws a soak of length from seed: a fault every 4 s on
// average from 10 s on, none in the last 20 s (the system is left to
// settle), and a reindex every 40 to 80 s. The same seed, length and shape
// give the same schedule.
func newSchedule(seed uint64, length time.Duration, sh soakShape) schedule {
	rng := rand.New(rand.NewPCG(seed, 0x50a4))
	total := 0
	for _, k := range faultKinds {
		total += k.weight
	}
	busy := map[string]time.Duration{}
	var s schedule
	at := 10 * time.Second
	for {
		at += 500*time.Millisecond + time.Duration(rng.ExpFloat64()*float64(3500*time.Millisecond))
		if at > length-20*time.Second {
			break
		}
		n := rng.IntN(total)
		k := faultKinds[0]
		for _, c := range faultKinds {
			if n < c.weight {
				k = c
				break
			}
			n -= c.weight
		}
		p := planned{At: at, Kind: k.kind, For: k.min + time.Duration(rng.Int64N(int64(k.max-k.min)+1))}
		switch k.kind {
		case faultKillWorker, faultStopOllama:
			p.Target = rng.IntN(sh.workers)
		case faultKillNode:
			p.Target = rng.IntN(sh.nodes)
		case faultFullDisk:
			p.Target = sh.smallDiskNode
		}
		if busy[p.resource()] > at {
			continue // its resource is still faulted or recovering: drawn, not used
		}
		busy[p.resource()] = at + p.For + k.settle
		s = append(s, p)
	}
	for at := 20 * time.Second; ; {
		at += 40*time.Second + time.Duration(rng.Int64N(int64(40*time.Second)))
		if at > length-30*time.Second {
			break
		}
		s = append(s, planned{At: at, Kind: runReindex})
	}
	slices.SortStableFunc(s, func(a, b planned) int { return cmp.Compare(a.At, b.At) })
	return s
}

// One seed is one schedule; faults of one resource never overlap, faults
// of different ones do; every kind comes up in a long soak.
func TestSoakScheduleReplays(t *testing.T) {
	t.Parallel()
	sh := soakShape{workers: 2, nodes: 3, smallDiskNode: 2}
	a, b := newSchedule(42, 30*time.Minute, sh), newSchedule(42, 30*time.Minute, sh)
	require.Equal(t, a.String(), b.String())
	require.NotEqual(t, a.String(), newSchedule(43, 30*time.Minute, sh).String())

	settle := map[faultKind]time.Duration{}
	for _, k := range faultKinds {
		settle[k.kind] = k.settle
	}
	kinds := map[faultKind]int{}
	until := map[string]time.Duration{}
	overlaps := 0
	var last planned
	for _, p := range a {
		kinds[p.Kind]++
		if p.Kind == runReindex {
			continue
		}
		require.GreaterOrEqual(t, p.At, until[p.resource()], "%s overlaps the fault before it on %s", p, p.resource())
		until[p.resource()] = p.At + p.For + settle[p.Kind]
		if last.Kind != "" && p.At < last.At+last.For {
			overlaps++
		}
		last = p
		require.Less(t, p.At, 30*time.Minute-20*time.Second)
	}
	for _, k := range faultKinds {
		require.Positive(t, kinds[k.kind], "no %s in 30 minutes", k.kind)
	}
	require.Positive(t, kinds[runReindex])
	require.Greater(t, overlaps, 10, "faults come together")
	short := newSchedule(1, 2*time.Minute, sh)
	require.GreaterOrEqual(t, len(short), 15, "a short soak still injects faults:\n%s", short)
}
