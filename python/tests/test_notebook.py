"""examples/notebooks/quickstart.ipynb executes top to bottom (nbconvert
--execute) against the live local network."""

import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
NOTEBOOK = os.path.join(ROOT, "examples", "notebooks", "quickstart.ipynb")


def test_quickstart_notebook(localnet, tmp_path):
    for mod, pkg in (("nbconvert", "python3-nbconvert"), ("ipykernel", "python3-ipykernel"), ("torch", "python3-torch"), ("pandas", "python3-pandas")):
        pytest.importorskip(mod, reason="the notebook needs %s (Debian: apt-get install %s)" % (mod, pkg))
    env = dict(os.environ, FEDGRID_ENV=localnet["env_file"],
               PYTHONPATH=os.pathsep.join([os.path.join(ROOT, "python")] + [p for p in [os.environ.get("PYTHONPATH")] if p]))
    r = subprocess.run([sys.executable, "-m", "nbconvert", "--to", "notebook", "--execute", "--ExecutePreprocessor.timeout=600",
                        "--ExecutePreprocessor.kernel_name=python3", "--output-dir", str(tmp_path), NOTEBOOK],
                       env=env, capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stderr[-5000:]
    with open(tmp_path / "quickstart.ipynb") as f:
        nb = json.load(f)
    outputs = [o for c in nb["cells"] if c["cell_type"] == "code" for o in c.get("outputs", [])]
    assert not [o for o in outputs if o.get("output_type") == "error"]
    text = "".join("".join(o.get("text", "")) for o in outputs)
    assert "held-out rows 154" in text and "succeeded after 40 epochs" in text
    import fedgrid
    if fedgrid.connect().can_federate():  # the binary trains across gateways: the notebook did too
        assert "rows per round 614" in text and "federated model: held-out accuracy" in text
    else:
        assert "cannot train across gateways" in text
