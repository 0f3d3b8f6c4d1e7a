// Package config holds what the peers' configurations (gateway, node,
// network) share: an error that names the field at fault, so that a
// library's Validate speaks of its own fields and the command line, which
// knows its flags, can name the flag instead.
package config

import (
	"errors"
	"fmt"
)

// FieldError is one invalid configuration field.
type FieldError struct {
	Field   string // the Go field name, e.g. "Lease"
	Problem string // what is wrong, e.g. "must be positive, got 0s"
}

func (e *FieldError) Error() string { return e.Field + " " + e.Problem }

// Check collects the field errors of one Validate.
type Check struct {
	errs []error
}

// Require records a FieldError for field unless ok.
func (c *Check) Require(ok bool, field, format string, args ...any) {
	if !ok {
		c.errs = append(c.errs, &FieldError{Field: field, Problem: fmt.Sprintf(format, args...)})
	}
}

// Add records err, if not nil, as a FieldError for field.
func (c *Check) Add(field string, err error) {
	if err != nil {
		c.errs = append(c.errs, &FieldError{Field: field, Problem: err.Error()})
	}
}

// Err joins what was recorded, prefixed with what (e.g. "gateway
// config"); nil if all is well.
func (c *Check) Err(what string) error {
	if len(c.errs) == 0 {
		return nil
	}
	return &Error{What: what, Fields: c.errs}
}

// Error is an invalid configuration: one or more FieldErrors.
type Error struct {
	What   string
	Fields []error
}

func (e *Error) Error() string {
	return e.What + ": " + errors.Join(e.Fields...).Error()
}

// Unwrap exposes the FieldErrors to errors.As.
func (e *Error) Unwrap() []error { return e.Fields }

// Fields lists the FieldErrors in err.
func Fields(err error) []*FieldError {
	var out []*FieldError
	var walk func(error)
	walk = func(err error) {
		if err == nil {
			return
		}
		if fe, ok := err.(*FieldError); ok {
			out = append(out, fe)
			return
		}
		switch u := err.(type) {
		case interface{ Unwrap() []error }:
			for _, e := range u.Unwrap() {
				walk(e)
			}
		case interface{ Unwrap() error }:
			walk(u.Unwrap())
		}
	}
	walk(err)
	return out
}
