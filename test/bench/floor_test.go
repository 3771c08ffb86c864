package bench

import (
	"testing"
	"time"
)

// floorRuns are a benchmark's timed runs of a command against its floor, in the same run,
// and the API requests the command made.
type floorRuns struct {
	ours, floor        time.Duration
	requests           int64
	minRatio, maxRatio float64
}

// add records one run (the command's time, its floor's, its requests) and returns the ratio.
func (r *floorRuns) add(ours, floor time.Duration, requests int64) float64 {
	ratio := float64(ours) / float64(floor)
	if r.minRatio == 0 || ratio < r.minRatio {
		r.minRatio = ratio
	}
	r.maxRatio = max(r.maxRatio, ratio)
	r.ours, r.floor, r.requests = r.ours+ours, r.floor+floor, r.requests+requests
	return ratio
}

// report writes CMD-s/op, floor-s/op, ratio-to-floor, ratio-min, ratio-max and
// requests/node for nodes nodes.
func (r *floorRuns) report(b *testing.B, cmd string, nodes int) {
	nf := float64(b.N)
	b.ReportMetric(r.ours.Seconds()/nf, cmd+"-s/op")
	b.ReportMetric(r.floor.Seconds()/nf, "floor-s/op")
	b.ReportMetric(float64(r.ours)/float64(r.floor), "ratio-to-floor")
	b.ReportMetric(r.minRatio, "ratio-min")
	b.ReportMetric(r.maxRatio, "ratio-max")
	b.ReportMetric(float64(r.requests)/nf/float64(nodes), "requests/node")
}
