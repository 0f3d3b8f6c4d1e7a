//go:build !linux

package memtrim

import "errors"

// ReleaseExecutable is implemented on Linux only; elsewhere it returns
// errors.ErrUnsupported.
func ReleaseExecutable() (Released, error) { return Released{}, errors.ErrUnsupported }
