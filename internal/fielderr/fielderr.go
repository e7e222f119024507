// Package fielderr is the one error type for a bad configuration value:
// it names the key that set it, so the config package can report every
// problem as a "key: problem" line whichever package found it.
package fielderr

import (
	"errors"
	"fmt"
)

// Error is one problem with one field.
type Error struct {
	// Key is the YAML key, relative to what was validated ("cpus[1]",
	// "min_blames") or whole ("scheduler.slice_min").
	Key string
	// Field is the Go field name where a caller maps fields to its own
	// keys (e.g. "SliceMin"); empty otherwise.
	Field   string
	Problem string
}

func (e Error) Error() string { return e.Key + ": " + e.Problem }

// New is an *Error for key with a formatted problem.
func New(key, format string, args ...any) *Error {
	return &Error{Key: key, Problem: fmt.Sprintf(format, args...)}
}

// Split takes an error apart (errors.Join trees included) into its field
// errors and the rest.
func Split(err error) (fields []*Error, others []error) {
	if err == nil {
		return nil, nil
	}
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		for _, e := range j.Unwrap() {
			f, o := Split(e)
			fields, others = append(fields, f...), append(others, o...)
		}
		return fields, others
	}
	var fe *Error
	if errors.As(err, &fe) {
		return []*Error{fe}, nil
	}
	return nil, []error{err}
}
