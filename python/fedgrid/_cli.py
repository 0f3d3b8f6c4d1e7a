"""Running the ``fedgrid`` binary: where it is, and how its errors become exceptions."""

import json
import os
import shutil
import subprocess

__all__ = ["FedgridError", "find_binary", "run"]


class FedgridError(Exception):
    """A fedgrid command failed.

    ``message`` is the CLI's own explanation (its last ``fedgrid: ...`` line on
    standard error), ``exit_code`` its exit status (2 for bad usage, 1 for any
    other failure; ``None`` when no command ran), ``command`` the arguments.
    """

    def __init__(self, message, exit_code=None, command=None, stderr=""):
        super().__init__(message)
        self.message = message
        self.exit_code = exit_code
        self.command = list(command or [])
        self.stderr = stderr

    def __str__(self):
        if self.exit_code is None:
            return self.message
        return "%s (exit code %d)" % (self.message, self.exit_code)


def find_binary(path=None):
    """Return the fedgrid binary to run: ``path``, else ``$FEDGRID_BIN``,
    else ``fedgrid`` on ``PATH``. Raises FedgridError when there is none."""
    for cand in (path, os.environ.get("FEDGRID_BIN")):
        if cand:
            if os.path.isfile(cand) and os.access(cand, os.X_OK):
                return cand
            raise FedgridError("fedgrid binary %r is not an executable file" % cand)
    found = shutil.which("fedgrid")
    if found:
        return found
    raise FedgridError("the fedgrid binary is not on PATH; build it (make build) and set FEDGRID_BIN=/path/to/bin/fedgrid")


def _message(stderr, code):
    lines = [l.strip() for l in stderr.strip().splitlines() if l.strip()]
    for i in range(len(lines) - 1, -1, -1):
        if lines[i].startswith("fedgrid:"):
            msg = lines[i][len("fedgrid:"):].strip()
            # Lines the CLI printed just before its summary (plan check's
            # mistakes, one per line, with their JSON paths) belong to it;
            # log lines (text or JSON) do not.
            details = []
            for line in reversed(lines[:i]):
                if line.startswith("time=") or line.startswith("{") or line.startswith("fedgrid:"):
                    break
                details.insert(0, line)
            if details:
                msg += ": " + "; ".join(details)
            return msg
    if lines:
        return lines[-1]
    return "fedgrid exited with status %d" % code


def run(binary, args, parse_json=True, timeout=None, env=None):
    """Run ``binary args...``; return its parsed JSON output (or its text when
    ``parse_json`` is false). A non-zero exit raises FedgridError."""
    cmd = [binary] + [str(a) for a in args]
    try:
        proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=timeout, env=env)
    except subprocess.TimeoutExpired:
        raise FedgridError("fedgrid %s did not finish within %s seconds" % (args[0] if args else "", timeout), None, cmd)
    out = proc.stdout.decode("utf-8", "replace")
    err = proc.stderr.decode("utf-8", "replace")
    if proc.returncode != 0:
        raise FedgridError(_message(err, proc.returncode), proc.returncode, cmd, err)
    if not parse_json:
        return out
    try:
        return json.loads(out)
    except ValueError:
        raise FedgridError("fedgrid %s printed something that is not JSON: %r" % (" ".join(cmd[1:3]), out[:200]), proc.returncode, cmd, err)
