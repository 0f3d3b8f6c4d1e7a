"""Fixtures: the fedgrid binary, and a live local network (examples/localnet)
of real processes on 127.0.0.1, started once per test session."""

import json
import os
import shutil
import subprocess
import tempfile
import threading
import time

import pytest

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))


def _binary():
    b = os.environ.get("FEDGRID_BIN") or os.path.join(ROOT, "bin", "fedgrid")
    if not os.access(b, os.X_OK):
        pytest.fail("no fedgrid binary at %s: run make build (or set FEDGRID_BIN)" % b)
    os.environ["FEDGRID_BIN"] = b
    return b


@pytest.fixture(scope="session")
def fedgrid_bin():
    return _binary()


@pytest.fixture(scope="session")
def data_dir():
    return os.path.join(ROOT, "examples", "data")


def start_localnet(bin_path, timeout=240):
    """Start examples/localnet; return (process, env dict, work dir). The
    network runs until the process's stdin is closed (stop_localnet)."""
    work = tempfile.mkdtemp(prefix="fedgrid-pytest-")
    env_file = os.path.join(work, "env.json")
    localnet = os.environ.get("FEDGRID_LOCALNET") or os.path.join(ROOT, "bin", "localnet")
    if not os.access(localnet, os.X_OK):
        go = shutil.which("go") or "/usr/local/go/bin/go"
        subprocess.run([go, "build", "-o", localnet, "./examples/localnet"], cwd=ROOT, check=True)
    proc = subprocess.Popen([localnet, "--bin", bin_path, "--data", os.path.join(ROOT, "examples", "data"),
                             "--work", os.path.join(work, "peers"), "--env", env_file],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=ROOT)
    ready = threading.Event()

    def watch():  # owned by this function's caller through proc: ends when proc's stdout closes
        for line in proc.stdout:
            if line.strip() == b"ready":
                ready.set()

    threading.Thread(target=watch, daemon=True).start()
    deadline = time.monotonic() + timeout
    while not ready.wait(0.2):
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            err = proc.stderr.read().decode(errors="replace")
            raise RuntimeError("localnet did not become ready (exit %s):\n%s" % (proc.returncode, err[-4000:]))
    with open(env_file) as f:
        env = json.load(f)
    env["env_file"] = env_file
    return proc, env, work


def stop_localnet(proc, work):
    proc.stdin.close()
    try:
        code = proc.wait(timeout=120)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise
    err = proc.stderr.read().decode(errors="replace")
    if code != 0:
        raise RuntimeError("localnet exited %d:\n%s" % (code, err[-4000:]))
    shutil.rmtree(work, ignore_errors=True)


@pytest.fixture(scope="session")
def localnet(fedgrid_bin):
    proc, env, work = start_localnet(fedgrid_bin)
    yield env
    stop_localnet(proc, work)


@pytest.fixture(scope="session")
def fg(localnet):
    import fedgrid
    return fedgrid.connect(bootstrap=localnet["bootstrap"], key=localnet["key"], network=localnet["network"])
