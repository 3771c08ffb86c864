package bench

import (
	"slices"
	"testing"
	"time"
)

// helmPairs is how many timed pairs a Helm-sized benchmark (well under a second each) takes
// per b.N: their figures swing more than the goal's margin over 3 runs, so they are the
// medians of at least 9, each pair interleaved (the order alternates).
const helmPairs = 9

// pairs times ours and theirs (each returning its own timed duration) in n·helmPairs pairs,
// alternating which goes first, and reports the medians and the median of the pairs'
// ratios (ratio), with the lowest and highest ratio.
func pairs(b *testing.B, ours, theirs func() time.Duration, oursName, theirsName string) {
	b.Helper()
	var o, t, r []float64
	for i := 0; i < b.N*helmPairs; i++ {
		var a, c time.Duration
		if i%2 == 0 {
			a = ours()
			c = theirs()
		} else {
			c = theirs()
			a = ours()
		}
		o, t, r = append(o, a.Seconds()), append(t, c.Seconds()), append(r, float64(a)/float64(c))
	}
	b.ReportMetric(median(o), oursName+"-s/op")
	b.ReportMetric(median(t), theirsName+"-s/op")
	b.ReportMetric(median(r), "ratio")
	b.ReportMetric(slices.Min(r), "ratio-min")
	b.ReportMetric(slices.Max(r), "ratio-max")
	b.Logf("%d pairs interleaved: %s %.3f s, %s %.3f s (medians), ratio %.3f [%.3f–%.3f]", len(r), oursName, median(o), theirsName, median(t), median(r), slices.Min(r), slices.Max(r))
}

func median(xs []float64) float64 {
	s := slices.Clone(xs)
	slices.Sort(s)
	if len(s) == 0 {
		return 0
	}
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}
