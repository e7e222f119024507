package eval

import (
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// Progress draws a one-line bar for long runs when its writer is a terminal
// and stays silent otherwise (logs and CI get the final table only).
type Progress struct {
	w     io.Writer
	tty   bool
	total int
	done  int
	start time.Time
}

// NewProgress returns a bar over total steps writing to f.
func NewProgress(f *os.File, total int) *Progress {
	_, err := unix.IoctlGetTermios(int(f.Fd()), unix.TCGETS)
	return &Progress{w: f, tty: err == nil, total: total, start: time.Now()}
}

// Step marks one step done and redraws with label.
func (p *Progress) Step(label string) {
	p.done++
	p.draw(label)
}

// Show redraws with label without advancing.
func (p *Progress) Show(label string) { p.draw(label) }

func (p *Progress) draw(label string) {
	if !p.tty || p.total <= 0 {
		return
	}
	const width = 30
	filled := min(width, p.done*width/p.total)
	fmt.Fprintf(p.w, "\r\033[K[%s%s] %d/%d %s %s", strings.Repeat("#", filled), strings.Repeat(".", width-filled),
		p.done, p.total, time.Since(p.start).Truncate(time.Second), label)
}

// Done clears the bar.
func (p *Progress) Done() {
	if p.tty {
		fmt.Fprint(p.w, "\r\033[K")
	}
}
