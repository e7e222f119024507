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
	var names []string
	s := expr
	i, parens := 0, 0
	skipTo := func(open, close byte) error {
		depth := 0
		for i < len(s) {
			switch c := s[i]; {
			case c == '"' || c == '\'' || c == '`':
				if err := skipString(s, &i); err != nil {
					return err
				}
				continue
			case c == open:
				depth++
			case c == close:
				depth--
				if depth == 0 {
					i++
					return nil
				}
			}
			i++
		}
		return fmt.Errorf("unbalanced %c in %q", open, expr)
	}
	isIdentStart := func(c byte) bool { return c == '_' || c == ':' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' }
	isIdent := func(c byte) bool { return isIdentStart(c) || c >= '0' && c <= '9' }
	nextNonSpace := func(j int) byte {
		for ; j < len(s); j++ {
			if s[j] != ' ' && s[j] != '\t' && s[j] != '\n' {
				return s[j]
			}
		}
		return 0
	}
	for i < len(s) {
		c := s[i]
		switch {
		case c == '"' || c == '\'' || c == '`':
			if err := skipString(s, &i); err != nil {
				return nil, err
			}
		case c == '{':
			start := i
			if err := skipTo('{', '}'); err != nil {
				return nil, err
			}
			if strings.Contains(s[start:i], "__name__") {
				return nil, fmt.Errorf("selects by __name__: %q", expr)
			}
		case c == '[':
			if err := skipTo('[', ']'); err != nil {
				return nil, err
			}
		case c == '$': // a Grafana variable: $name or ${name}
			i++
			if i < len(s) && s[i] == '{' {
				if err := skipTo('{', '}'); err != nil {
					return nil, err
				}
			}
			for i < len(s) && isIdent(s[i]) {
				i++
			}
		case c >= '0' && c <= '9' || c == '.':
			for i < len(s) && (isIdent(s[i]) || s[i] == '.') {
				i++
			}
		case isIdentStart(c):
			start := i
			for i < len(s) && isIdent(s[i]) {
				i++
			}
			word := s[start:i]
			next := nextNonSpace(i)
			switch {
			case labelListWords[strings.ToLower(word)] && next == '(':
				for i < len(s) && s[i] != '(' {
					i++
				}
				if err := skipTo('(', ')'); err != nil {
					return nil, err
				}
			case next == '(' || promqlKeywords[strings.ToLower(word)] || aggregations[strings.ToLower(word)]:
				// a function, an aggregation (sum by (x) (...)) or a keyword
			default:
				if !slices.Contains(names, word) {
					names = append(names, word)
				}
			}
		case c == '(':
			parens++
			i++
		case c == ')':
			if parens--; parens < 0 {
				return nil, fmt.Errorf("unbalanced ) in %q", expr)
			}
			i++
		default:
			i++
		}
	}
	if parens != 0 {
		return nil, fmt.Errorf("unbalanced ( in %q", expr)
	}
	return names, nil
}

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
