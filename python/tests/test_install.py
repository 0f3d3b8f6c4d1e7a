"""`pip install ./python` works offline: in a fresh virtual environment that
sees Debian's packages, with no package index."""

import os
import subprocess
import sys

import pytest

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """A fresh venv (seeing Debian's packages) with ./python pip-installed, no index."""
    tmp_path = tmp_path_factory.mktemp("install")
    venv = tmp_path / "venv"
    r = subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", str(venv)], capture_output=True, text=True)
    if r.returncode != 0:
        pytest.fail("python3 -m venv failed (Debian: apt-get install python3-venv): " + r.stderr)
    py = str(venv / "bin" / "python")
    r = subprocess.run([py, "-m", "pip", "install", "--no-index", os.path.join(ROOT, "python")], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    r = subprocess.run([py, "-c", "import fedgrid, fedgrid.model; print(fedgrid.__file__, fedgrid.__version__)"],
                       capture_output=True, text=True, cwd=str(tmp_path))
    assert r.returncode == 0, r.stderr
    path, version = r.stdout.split()
    assert path.startswith(str(venv)) and version == "0.1.0"
    return py


def test_pip_install_offline(installed):
    assert os.path.exists(installed)


def test_readme_snippet(installed, localnet, tmp_path):
    """Acceptance 1: after pip install, the README's Python quick start
    searches, trains the demo model and scores it."""
    pytest.importorskip("torch", reason="the README snippet uses torch (Debian: apt-get install python3-torch)")
    pytest.importorskip("pandas", reason="the README snippet uses pandas (Debian: apt-get install python3-pandas)")
    readme = open(os.path.join(ROOT, "README.md")).read()
    start = readme.index("```python\n", readme.index("## Python quick start")) + len("```python\n")
    code = readme[start:readme.index("```", start)]
    env = dict(os.environ, FEDGRID_BOOTSTRAP=localnet["bootstrap"][0], FEDGRID_KEY=localnet["key"],
               FEDGRID_NETWORK=localnet["network"], HOLDOUT=localnet["datasets"]["pima-diabetes"]["holdout"])
    r = subprocess.run([installed, "-c", code], cwd=str(tmp_path), env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
    acc = float(r.stdout.split("held-out accuracy")[1].split()[0])
    assert acc > 0.7, r.stdout
