package main

import (
	"fmt"
	"io"
	"strings"
	"time"
)

// progress draws a one-line progress bar on a terminal; elsewhere it draws
// nothing.
type progress struct {
	w      io.Writer
	on     bool
	label  string
	unit   string
	total  int64 // 0: unknown
	done   int64
	bytes  int64
	start  time.Time
	drawn  time.Time
	active bool // a line is on screen
}

func newProgress(stderr io.Writer, label, unit string, total, done int64) *progress {
	return &progress{w: stderr, on: isTerminal(stderr), label: label, unit: unit, total: total, done: done, start: time.Now()}
}

// add counts n more units and b more bytes, and redraws at most 10 times a
// second.
func (p *progress) add(n, b int64) {
	p.done += n
	p.bytes += b
	if p.on && time.Since(p.drawn) >= 100*time.Millisecond {
		p.draw()
	}
}

func (p *progress) draw() {
	p.drawn = time.Now()
	var b strings.Builder
	b.WriteString("\r" + p.label + " ")
	if p.total > 0 {
		frac := min(float64(p.done)/float64(p.total), 1)
		const width = 30
		fill := int(frac * width)
		b.WriteString("[" + strings.Repeat("#", fill) + strings.Repeat("-", width-fill) + "]")
		fmt.Fprintf(&b, " %3d%%  %d/%d %s", int(frac*100), p.done, p.total, p.unit)
	} else {
		fmt.Fprintf(&b, " %d %s", p.done, p.unit)
	}
	if p.bytes > 0 {
		fmt.Fprintf(&b, "  %s", humanBytes(p.bytes))
	}
	if secs := time.Since(p.start).Seconds(); secs >= 1 {
		fmt.Fprintf(&b, "  %.0f/s", float64(p.done)/secs)
	}
	b.WriteString("\x1b[K") // clear what a longer line left
	io.WriteString(p.w, b.String())
	p.active = true
}

// finish draws the last state and ends the line.
func (p *progress) finish() {
	if !p.on {
		return
	}
	p.draw()
	io.WriteString(p.w, "\n")
	p.active = false
}

func humanBytes(n int64) string {
	switch {
	case n >= 1<<30:
		return fmt.Sprintf("%.1f GiB", float64(n)/(1<<30))
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%.1f KiB", float64(n)/(1<<10))
	}
	return fmt.Sprintf("%d B", n)
}
