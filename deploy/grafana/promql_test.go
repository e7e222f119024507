package grafana

import (
	"fmt"
	"slices"
	"strings"
	"testing"
)

// promqlKeywords are PromQL words that are not metric names when they are
// not followed by "(": binary operators, modifiers, number literals.
var promqlKeywords = map[string]bool{
	"and": true, "or": true, "unless": true, "atan2": true, "bool": true, "offset": true,
	"by": true, "without": true, "on": true, "ignoring": true, "group_left": true, "group_right": true,
	"inf": true, "nan": true,
}

// aggregations may be followed by "by (...)" or "without (...)" before "(".
var aggregations = map[string]bool{
	"sum": true, "min": true, "max": true, "avg": true, "group": true, "stddev": true, "stdvar": true,
	"count": true, "count_values": true, "bottomk": true, "topk": true, "quantile": true,
	"limitk": true, "limit_ratio": true,
}

// labelListWords take a parenthesised list of label names.
var labelListWords = map[string]bool{
	"by": true, "without": true, "on": true, "ignoring": true, "group_left": true, "group_right": true,
}

// metricNames returns the metric names a PromQL expression (with Grafana
// variables such as $instance and $__rate_interval) selects: identifiers
// outside label matchers, ranges and strings that are not functions,
// aggregations or keywords. Selecting by {__name__=...} is refused.
func metricNames(expr string) ([]string, error) {
	p := &promqlScanner{s: expr}
	s := p.s
	for p.i < len(s) {
		c := s[p.i]
		switch {
		case c == '"' || c == '\'' || c == '`':
			if err := skipString(s, &p.i); err != nil {
				return nil, err
			}
		case c == '{':
			start := p.i
			if err := p.skipTo('{', '}'); err != nil {
				return nil, err
			}
			if strings.Contains(s[start:p.i], "__name__") {
				return nil, fmt.Errorf("selects by __name__: %q", expr)
			}
		case c == '[':
			if err := p.skipTo('[', ']'); err != nil {
				return nil, err
			}
		case c == '$': // a Grafana variable: $name or ${name}
			p.i++
			if p.i < len(s) && s[p.i] == '{' {
				if err := p.skipTo('{', '}'); err != nil {
					return nil, err
				}
			}
			for p.i < len(s) && isIdent(s[p.i]) {
				p.i++
			}
		case c >= '0' && c <= '9' || c == '.':
			for p.i < len(s) && (isIdent(s[p.i]) || s[p.i] == '.') {
				p.i++
			}
		case isIdentStart(c):
			if err := p.word(); err != nil {
				return nil, err
			}
		case c == '(':
			p.parens++
			p.i++
		case c == ')':
			if p.parens--; p.parens < 0 {
				return nil, fmt.Errorf("unbalanced ) in %q", expr)
			}
			p.i++
		default:
			p.i++
		}
	}
	if p.parens != 0 {
		return nil, fmt.Errorf("unbalanced ( in %q", expr)
	}
	return p.names, nil
}

// promqlScanner walks a PromQL expression s from i, counting open
// parentheses and collecting the metric names it passes.
type promqlScanner struct {
	s      string
	i      int
	parens int
	names  []string
}

// skipTo moves past the bracketed span that opens at s[i] (strings inside
// it included).
func (p *promqlScanner) skipTo(open, close byte) error {
	s := p.s
	depth := 0
	for p.i < len(s) {
		switch c := s[p.i]; {
		case c == '"' || c == '\'' || c == '`':
			if err := skipString(s, &p.i); err != nil {
				return err
			}
			continue
		case c == open:
			depth++
		case c == close:
			depth--
			if depth == 0 {
				p.i++
				return nil
			}
		}
		p.i++
	}
	return fmt.Errorf("unbalanced %c in %q", open, s)
}

// word reads the identifier at s[i]: a label list's keyword (its list
// skipped), a function, aggregation or keyword, or a metric name.
func (p *promqlScanner) word() error {
	s := p.s
	start := p.i
	for p.i < len(s) && isIdent(s[p.i]) {
		p.i++
	}
	word := s[start:p.i]
	next := p.nextNonSpace(p.i)
	switch {
	case labelListWords[strings.ToLower(word)] && next == '(':
		for p.i < len(s) && s[p.i] != '(' {
			p.i++
		}
		return p.skipTo('(', ')')
	case next == '(' || promqlKeywords[strings.ToLower(word)] || aggregations[strings.ToLower(word)]:
		// a function, an aggregation (sum by (x) (...)) or a keyword
	default:
		if !slices.Contains(p.names, word) {
			p.names = append(p.names, word)
		}
	}
	return nil
}

// nextNonSpace is the first byte from s[j] on that is not white space (0
// at the end).
func (p *promqlScanner) nextNonSpace(j int) byte {
	for ; j < len(p.s); j++ {
		if p.s[j] != ' ' && p.s[j] != '\t' && p.s[j] != '\n' {
			return p.s[j]
		}
	}
	return 0
}

func isIdentStart(c byte) bool {
	return c == '_' || c == ':' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z'
}
func isIdent(c byte) bool { return isIdentStart(c) || c >= '0' && c <= '9' }

// skipString moves *i past the string literal that starts at s[*i].
func skipString(s string, i *int) error {
	quote := s[*i]
	for j := *i + 1; j < len(s); j++ {
		switch {
		case s[j] == '\\' && quote != '`':
			j++
		case s[j] == quote:
			*i = j + 1
			return nil
		}
	}
	return fmt.Errorf("unterminated string in %q", s)
}

func TestMetricNames(t *testing.T) {
	for expr, want := range map[string][]string{
		`rate(taichi_lent_seconds_total{instance=~"$instance"}[$__rate_interval])`:                                                                                   {"taichi_lent_seconds_total"},
		`histogram_quantile(0.99, sum by (instance, cpu, le) (rate(a_bucket{x=~"$i", y="}{"}[5m] offset 1h))) / on(instance) group_left(cpu) b + 2e3 * c and bool d`: {"a_bucket", "b", "c", "d"},
		`sum without (cause) (x) > Inf or y unless ${z}`:                                                                                                             {"x", "y"},
		`taichi:recorded:rate5m`: {"taichi:recorded:rate5m"},
	} {
		got, err := metricNames(expr)
		if err != nil || !slices.Equal(got, want) {
			t.Errorf("metricNames(%q) = %q, %v; want %q", expr, got, err, want)
		}
	}
	for _, bad := range []string{`{__name__="x"}`, `rate(x{a="b}[5m])`, `sum(x{a="b"}`, `x)`} {
		if _, err := metricNames(bad); err == nil {
			t.Errorf("metricNames(%q): no error", bad)
		}
	}
}
