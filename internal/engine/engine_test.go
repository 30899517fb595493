package engine_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/waywo/embed/internal/engine"
)

// A call with a refused input is split in halves until the input fails
// alone; its neighbours get their vectors, and the calls are counted.
func TestRefusedInputsAreIsolated(t *testing.T) {
	call := func(_ context.Context, in []string) ([][]float32, int, error) {
		for _, s := range in {
			if strings.HasPrefix(s, "bad") {
				return nil, 0, fmt.Errorf("%w: %s", engine.ErrRejected, s)
			}
		}
		out := make([][]float32, len(in))
		for i, s := range in {
			out[i] = []float32{float32(len(s))}
		}
		return out, len(in), nil
	}
	in := []string{"a", "bb", "bad1", "ccc", "dddd", "bad22"}
	out, err := engine.EmbedAll(context.Background(), in, 4, call)
	require.NoError(t, err)
	require.Equal(t, [][]float32{{1}, {2}, nil, {3}, {4}, nil}, out.Vectors)
	require.ErrorIs(t, out.Rejected[2], engine.ErrRejected)
	require.ErrorIs(t, out.Rejected[5], engine.ErrRejected)
	require.Equal(t, 4, out.Tokens)
	require.Equal(t, 8, out.Calls, "the first four: the call, its halves, the bad half's halves (5); the last two: the call and its halves (3)")

	_, err = engine.EmbedAll(context.Background(), in, 4, func(context.Context, []string) ([][]float32, int, error) {
		return nil, 0, engine.ErrUnavailable
	})
	require.ErrorIs(t, err, engine.ErrUnavailable, "an unusable model fails the whole list")
}

func TestBusyCarriesItsRetryAfter(t *testing.T) {
	err := fmt.Errorf("call: %w", &engine.BusyError{Host: "h", RetryAfter: 3 * time.Second})
	d, ok := engine.RetryAfter(err)
	require.True(t, ok)
	require.Equal(t, 3*time.Second, d)
	require.ErrorIs(t, err, engine.ErrUnavailable)
	_, ok = engine.RetryAfter(errors.New("other"))
	require.False(t, ok)
}

func TestRepliesThatDoNotFitAreRefused(t *testing.T) {
	require.NoError(t, engine.CheckReply([][]float32{{1, 2}}, 1, 2, "m"))
	require.ErrorIs(t, engine.CheckReply([][]float32{{1, 2}}, 2, 2, "m"), engine.ErrUnavailable)
	require.ErrorIs(t, engine.CheckReply([][]float32{{1}}, 1, 2, "m"), engine.ErrUnavailable)
	nan := float32(0)
	nan /= nan
	require.ErrorIs(t, engine.CheckReply([][]float32{{1, nan}}, 1, 2, "m"), engine.ErrUnavailable)
}

// The WithComputed function runs for the call that covers the last input,
// and only when that call runs engine.Computed: calls that more follow do
// not free the server.
func TestComputedRunsForTheLastCallOnly(t *testing.T) {
	var ranges [][]string
	var computedIn []int
	call := func(ctx context.Context, in []string) ([][]float32, int, error) {
		ranges = append(ranges, in)
		engine.Computed(ctx) // what a backend does when its answer begins
		return make([][]float32, len(in)), 0, nil
	}
	ctx := engine.WithComputed(context.Background(), func() { computedIn = append(computedIn, len(ranges)-1) })
	_, err := engine.EmbedAll(ctx, []string{"a", "b", "c", "d", "e"}, 2, call)
	require.NoError(t, err)
	require.Len(t, ranges, 3)
	require.Equal(t, []int{2}, computedIn, "only the third call, [e], is the last")
	engine.Computed(context.Background()) // no function: nothing happens
}
