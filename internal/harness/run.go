package harness

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os/exec"
	"strings"
)

// Result is how a one-shot command ended.
type Result struct {
	Args     []string
	Stdout   []byte
	Stderr   []byte
	ExitCode int
}

// CommandError is returned when a command exits with a status other than 0.
type CommandError struct {
	Args     []string
	ExitCode int
	Stderr   string // trimmed
}

func (e *CommandError) Error() string {
	msg := lastLine(e.Stderr)
	if msg == "" {
		msg = "(nothing on stderr)"
	}
	return fmt.Sprintf("fedgrid %s: exit status %d: %s", strings.Join(e.Args, " "), e.ExitCode, msg)
}

// ExitCode returns the exit status in err if it is a *CommandError, else -1.
func ExitCode(err error) int {
	var ce *CommandError
	if errors.As(err, &ce) {
		return ce.ExitCode
	}
	return -1
}

// Run runs `fedgrid args...` to completion and returns its output. The
// error is a *CommandError when it exits with a status other than 0 (the
// Result is filled in then too), or another error when it could not be run
// or ctx ended first (the process is then killed).
func (h *Harness) Run(ctx context.Context, args ...string) (*Result, error) {
	return h.RunInput(ctx, "", args...)
}

// RunInput is Run with stdin as the command's standard input (empty: none),
// e.g. a password for fedgrid admin login.
func (h *Harness) RunInput(ctx context.Context, stdin string, args ...string) (*Result, error) {
	cmd := h.command(ctx, args)
	if stdin != "" {
		cmd.Stdin = strings.NewReader(stdin)
	}
	var stdout, stderr bytes.Buffer
	cmd.Stdout = &stdout
	cmd.Stderr = &stderr
	err := cmd.Run()
	res := &Result{Args: args, Stdout: stdout.Bytes(), Stderr: stderr.Bytes(), ExitCode: -1}
	if cmd.ProcessState != nil {
		res.ExitCode = cmd.ProcessState.ExitCode()
	}
	if ctx.Err() != nil {
		return res, fmt.Errorf("fedgrid %s: %w; stderr: %s", strings.Join(args, " "), ctx.Err(), lastLine(stderr.String()))
	}
	var ee *exec.ExitError
	if errors.As(err, &ee) && res.ExitCode >= 0 {
		return res, &CommandError{Args: args, ExitCode: res.ExitCode, Stderr: strings.TrimSpace(stderr.String())}
	}
	if err != nil {
		return res, fmt.Errorf("fedgrid %s: %w", strings.Join(args, " "), err)
	}
	return res, nil
}

// RunJSON runs a command that prints one JSON document on stdout and
// decodes it into out. When the command fails but still printed a JSON
// document (train --wait --json on a failed job does), out is filled in and
// the *CommandError is returned.
func (h *Harness) RunJSON(ctx context.Context, out any, args ...string) error {
	res, err := h.Run(ctx, args...)
	if res == nil {
		return err
	}
	if len(bytes.TrimSpace(res.Stdout)) == 0 {
		if err != nil {
			return err
		}
		return fmt.Errorf("fedgrid %s: printed nothing on stdout, want a JSON document", strings.Join(args, " "))
	}
	dec := json.NewDecoder(bytes.NewReader(res.Stdout))
	if derr := dec.Decode(out); derr != nil {
		return errors.Join(err, fmt.Errorf("fedgrid %s: stdout is not the JSON document wanted: %v; stdout: %.300s", strings.Join(args, " "), derr, res.Stdout))
	}
	if dec.More() {
		return errors.Join(err, fmt.Errorf("fedgrid %s: stdout holds more than one JSON document", strings.Join(args, " ")))
	}
	return err
}

func lastLine(s string) string {
	s = strings.TrimSpace(s)
	if i := strings.LastIndexByte(s, '\n'); i >= 0 {
		return strings.TrimSpace(s[i+1:])
	}
	return s
}
