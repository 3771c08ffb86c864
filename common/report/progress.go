package report

import (
	"fmt"
	"io"
	"sort"
	"strings"
	"sync"
	"time"

	"golang.org/x/term"
)

// PlainEvery is the least time between two plain progress lines of one key in a pipe.
const PlainEvery = 5 * time.Second

// PlainHeartbeat: a state that does not change is said again this often in a pipe, so a
// log shows the run is alive (and CI systems that stop silent jobs do not).
const PlainHeartbeat = 30 * time.Second

// Progress shows what a long run is doing. On a terminal it keeps a live block at the
// bottom of the stream — one status line per thing waited for (a node's drain, a reboot)
// and a count line — rewritten in place at most ten times a second; lines that must stay
// (a failed node) are printed above it. In a pipe (NewPlainProgress) it prints a plain
// line when a status changes, at most one per key every PlainEvery (and the same state
// again after PlainHeartbeat), and nothing else: the report says the rest. A nil
// *Progress, or one with a nil writer, shows nothing. Safe for concurrent use.
type Progress struct {
	mu     sync.Mutex
	w      io.Writer
	out    *Stream // the live block's writer: w's one writer
	plain  bool
	now    func() time.Time
	width  int
	count  string
	keys   []string
	status map[string]string
	last   time.Time
	said   map[string]plainLine
}

type plainLine struct {
	state   string
	at      time.Time
	pending string // a change not yet said (it came too soon after the last line)
}

// NewProgress returns a live Progress for a terminal w (nil: silent).
func NewProgress(w io.Writer) *Progress {
	p := &Progress{w: w, now: time.Now, status: map[string]string{}, said: map[string]plainLine{}}
	if w == nil {
		return p
	}
	p.out = NewStream(w)
	if f, ok := p.out.file(); ok {
		if width, _, err := term.GetSize(int(f.Fd())); err == nil && width > 0 {
			p.width = width - 1
		}
	}
	return p
}

// NewPlainProgress returns a Progress for a pipe or a log: status changes as plain lines.
func NewPlainProgress(w io.Writer) *Progress {
	p := NewProgress(w)
	p.plain = true
	return p
}

// ForStream returns a live Progress when w is a terminal, else a plain one.
func ForStream(w io.Writer) *Progress {
	if w == nil || IsTerminal(w) {
		return NewProgress(w)
	}
	return NewPlainProgress(w)
}

func (p *Progress) off() bool { return p == nil || p.w == nil }

// Node prints a line that stays (a node that failed) above the live block. In a pipe it
// prints nothing: the report has it.
func (p *Progress) Node(line string) {
	if p.off() || p.plain {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.draw(line)
}

// Count sets the live count line (terminal only).
func (p *Progress) Count(text string) {
	if p.off() || p.plain {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.count = text
	if p.now().Sub(p.last) >= 100*time.Millisecond {
		p.draw("")
	}
}

// Status sets what key (a node) is waiting for: state is what changes seldom (draining,
// blocked by a budget, rebooting), detail what changes all the time (time left). On a
// terminal the key's line is rewritten in place; in a pipe "key: state detail" is printed
// when state changes, at most once per PlainEvery for the key.
func (p *Progress) Status(key, state, detail string) {
	if p.off() {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	line := key + ": " + state
	if detail != "" {
		line += " (" + detail + ")"
	}
	now := p.now()
	if p.plain {
		s := p.said[key]
		changed := s.state != state
		if !changed && now.Sub(s.at) < PlainHeartbeat {
			return
		}
		if now.Sub(s.at) < PlainEvery {
			s.pending = line
			p.said[key] = s
			return
		}
		fmt.Fprintln(p.w, line)
		p.said[key] = plainLine{state: state, at: now}
		return
	}
	old, seen := p.status[key]
	if !seen {
		p.keys = append(p.keys, key)
	}
	p.status[key] = line
	if old != line && (!seen || oldState(old, key) != state || now.Sub(p.last) >= 100*time.Millisecond) {
		p.draw("")
	}
}

func oldState(line, key string) string {
	s := strings.TrimPrefix(line, key+": ")
	if i := strings.Index(s, " ("); i >= 0 {
		s = s[:i]
	}
	return s
}

// Clear removes key's status line (its wait is over). In a pipe a change still owed is
// dropped: the report says how the node ended.
func (p *Progress) Clear(key string) {
	if p.off() {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.plain {
		delete(p.said, key)
		return
	}
	if _, ok := p.status[key]; !ok {
		return
	}
	delete(p.status, key)
	for i, k := range p.keys {
		if k == key {
			p.keys = append(p.keys[:i], p.keys[i+1:]...)
			break
		}
	}
	p.draw("")
}

// End clears the live block (on a terminal).
func (p *Progress) End() {
	if p.off() || p.plain {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.count, p.keys, p.status = "", nil, map[string]string{}
	p.draw("")
}

// draw rewrites the live block, with a line that stays printed above it first.
func (p *Progress) draw(stay string) {
	var lines []string
	for _, k := range p.keys {
		lines = append(lines, p.fit(p.status[k]))
	}
	if p.count != "" {
		lines = append(lines, p.fit(p.count))
	}
	p.out.draw(stay, lines)
	p.last = p.now()
}

// fit cuts a live line to the terminal's width (a wrapped line would break the rewrite).
func (p *Progress) fit(s string) string {
	if p.width > 0 && len([]rune(s)) > p.width {
		r := []rune(s)
		return string(r[:p.width-1]) + "…"
	}
	return s
}

// Tally is the live count of a run over many nodes: finished (ok and failed) and waiting,
// with the node waiting longest; each failure is printed above it as it comes, a node
// that is fine is not (a thousand nodes would scroll the report away).
type Tally struct {
	p       *Progress
	what    string
	total   int
	mu      sync.Mutex
	started map[string]time.Time
	ok      int
	failed  int
	stop    chan struct{}
	done    sync.WaitGroup
}

// Tally starts the live count of what ("prep", "verify") over total nodes, refreshed every
// second until Stop.
func (p *Progress) Tally(what string, total int) *Tally {
	t := &Tally{p: p, what: what, total: total, started: map[string]time.Time{}, stop: make(chan struct{})}
	if p.off() || p.plain {
		return t
	}
	t.done.Add(1)
	go func() {
		defer t.done.Done()
		tick := time.NewTicker(time.Second)
		defer tick.Stop()
		for {
			select {
			case <-t.stop:
				return
			case <-tick.C:
				t.show()
			}
		}
	}()
	return t
}

// Started tells that node's pod was created.
func (t *Tally) Started(node string) {
	t.mu.Lock()
	if _, ok := t.started[node]; !ok {
		t.started[node] = time.Now()
	}
	t.mu.Unlock()
	t.show()
}

// Finished tells that node finished; failure, when not empty, is printed above the count.
func (t *Tally) Finished(node, failure string) {
	t.mu.Lock()
	delete(t.started, node)
	if failure == "" {
		t.ok++
	} else {
		t.failed++
	}
	t.mu.Unlock()
	if failure != "" {
		t.p.Node(failure)
	}
	t.show()
}

// Line is the count line as it stands.
func (t *Tally) Line(now time.Time) string {
	t.mu.Lock()
	defer t.mu.Unlock()
	line := fmt.Sprintf("%s: %d/%d finished: %d ok, %d failed", t.what, t.ok+t.failed, t.total, t.ok, t.failed)
	if waiting := t.total - t.ok - t.failed; waiting > 0 {
		line += fmt.Sprintf("; %d waiting", waiting)
		names := make([]string, 0, len(t.started))
		for n := range t.started {
			names = append(names, n)
		}
		sort.Slice(names, func(i, j int) bool {
			a, b := t.started[names[i]], t.started[names[j]]
			return a.Before(b) || a.Equal(b) && names[i] < names[j]
		})
		if len(names) > 0 {
			line += fmt.Sprintf(", longest %s (%s)", names[0], now.Sub(t.started[names[0]]).Round(time.Second))
		}
	}
	return line
}

func (t *Tally) show() {
	if t.p.off() || t.p.plain {
		return
	}
	t.p.Count(t.Line(time.Now()))
}

// Stop ends the refreshes (the Progress's End clears the line).
func (t *Tally) Stop() {
	select {
	case <-t.stop:
	default:
		close(t.stop)
	}
	t.done.Wait()
}
