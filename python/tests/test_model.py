"""fedgrid.Model and the CLI wrapper, without a network: models trained by
`fedgrid plan run`, predictions against `fedgrid model eval`."""

import csv
import json
import os
import subprocess
import sys

import pytest

import fedgrid
from fedgrid import model as fmodel

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))


def train_offline(bin_path, plan, data, tmp_path, name="m"):
    pf = tmp_path / (name + ".plan.json")
    pf.write_text(json.dumps(plan))
    out = tmp_path / (name + ".model.json")
    subprocess.run([bin_path, "plan", "run", "--plan", str(pf), "--data", data, "--out", str(out)], check=True, capture_output=True)
    return str(out)


def model_eval(bin_path, model_path, data):
    r = subprocess.run([bin_path, "model", "eval", "--model", model_path, "--data", data, "--json"], check=True, capture_output=True)
    return json.loads(r.stdout)


def read_rows(path):
    with open(path) as f:
        return list(csv.DictReader(f))


MLP = {
    "format": "fedgrid.plan/v1", "name": "mlp-norms",
    "features": ["pregnant", "glucose", "pressure", "triceps", "insulin", "mass", "pedigree", "age"], "label": "diabetes",
    "preprocess": [{"op": "standardize"}, {"op": "min_max", "columns": ["age"]}],
    "params": {"w1": {"shape": [8, 6]}, "b1": {"shape": [6]}, "m": {"shape": [6]}, "v": {"shape": [6], "init": "ones"},
               "g": {"shape": [6], "init": "ones"}, "w2": {"shape": [6, 3]}, "w3": {"shape": [3, 1]}, "b3": {"shape": [1]}},
    "forward": [{"op": "matmul", "in": ["x", "w1"], "out": "h"}, {"op": "add", "in": ["h", "b1"], "out": "h"},
                {"op": "batch_norm", "in": ["h", "m", "v"], "out": "h"}, {"op": "mul", "in": ["h", "g"], "out": "h"},
                {"op": "relu", "in": ["h"], "out": "h"}, {"op": "dropout", "in": ["h"], "out": "h", "p": 0.1},
                {"op": "matmul", "in": ["h", "w2"], "out": "k"}, {"op": "layer_norm", "in": ["k"], "out": "k"},
                {"op": "tanh", "in": ["k"], "out": "k"}, {"op": "matmul", "in": ["k", "w3"], "out": "z"},
                {"op": "add", "in": ["z", "b3"], "out": "z"}, {"op": "sigmoid", "in": ["z"], "out": "p"}],
    "loss": {"op": "bce", "in": ["p", "y"]},
    "optimizer": {"name": "adam", "learning_rate": 0.01}, "train": {"epochs": 15, "batch_size": 32, "seed": 4},
}


@pytest.fixture(scope="module")
def mlp_model(fedgrid_bin, data_dir, tmp_path_factory):
    return train_offline(fedgrid_bin, MLP, os.path.join(data_dir, "pima_diabetes.csv"), tmp_path_factory.mktemp("m"))


def test_predict_lists_match_model_eval(fedgrid_bin, data_dir, mlp_model):
    data = os.path.join(data_dir, "pima_diabetes.csv")
    m = fedgrid.load_model(mlp_model)
    assert m.task == "binary" and m.label == "diabetes"
    rows = read_rows(data)
    got = m.evaluate(rows)
    want = model_eval(fedgrid_bin, mlp_model, data)
    assert got["rows"] == want["rows"] == 768
    assert abs(got["loss"] - want["loss"]) < 1e-9
    assert got["accuracy"] == want["accuracy"]
    assert abs(got["auc"] - want["auc"]) < 1e-9
    # lists in, lists out, one output per row, probabilities
    pred = m.predict([[float(r[f]) for f in m.features] for r in rows[:5]])
    assert isinstance(pred, list) and len(pred) == 5 and all(len(r) == 1 and 0 < r[0] < 1 for r in pred)


def test_predict_numpy_equals_lists(mlp_model, data_dir):
    np = pytest.importorskip("numpy", reason="numpy is not installed")
    m = fedgrid.load_model(mlp_model)
    rows = read_rows(os.path.join(data_dir, "pima_diabetes.csv"))
    x = [[float(r[f]) for f in m.features] for r in rows]
    a = m.predict(np.array(x))
    assert isinstance(a, np.ndarray) and a.shape == (768, 1)
    assert np.abs(a - np.array(m.predict(x))).max() < 1e-12


def test_predict_without_numpy(mlp_model, data_dir):
    # A fresh interpreter where numpy cannot be imported.
    code = (
        "import sys; sys.modules['numpy'] = None\n"
        "import fedgrid, csv\n"
        "m = fedgrid.load_model(%r)\n"
        "rows = list(csv.DictReader(open(%r)))\n"
        "p = m.predict([[r[f] for f in m.features] for r in rows[:3]])\n"
        "assert fedgrid.model._np is None\n"
        "print(len(p), type(p).__name__)\n" % (mlp_model, os.path.join(data_dir, "pima_diabetes.csv")))
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=os.path.dirname(fedgrid.__path__[0]))
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["3", "list"]


def test_roc():
    fpr, tpr = fmodel.roc_curve([0.9, 0.8, 0.7, 0.1], [1, 0, 1, 0])
    assert fpr == [0, 0, 0.5, 0.5, 1] and tpr == [0, 0.5, 0.5, 1, 1]
    assert fmodel.roc_auc([0.9, 0.8, 0.7, 0.1], [1, 0, 1, 0]) == 0.75
    assert fmodel.roc_auc([0.5, 0.5], [1, 0]) == 0.5


def test_model_refuses_other_documents():
    with pytest.raises(ValueError, match="fedgrid.model/v1"):
        fedgrid.Model({"format": "fedgrid.plan/v1"})


def test_cli_errors_are_exceptions(fedgrid_bin, tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text('{"format": "fedgrid.plan/v1", "nope": 1}')
    with pytest.raises(fedgrid.FedgridError) as e:
        fedgrid._cli.run(fedgrid_bin, ["plan", "check", "--plan", str(bad)], parse_json=False)
    assert e.value.exit_code == 1
    assert "nope" in e.value.message
    with pytest.raises(fedgrid.FedgridError) as e:
        fedgrid._cli.run(fedgrid_bin, ["job"])  # no job reference: bad usage
    assert e.value.exit_code == 2
    assert e.value.message


def test_find_binary(tmp_path, monkeypatch):
    monkeypatch.setenv("FEDGRID_BIN", str(tmp_path / "missing"))
    with pytest.raises(fedgrid.FedgridError, match="not an executable"):
        fedgrid.find_binary()
    monkeypatch.delenv("FEDGRID_BIN")
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(fedgrid.FedgridError, match="not on PATH"):
        fedgrid.find_binary()


def test_one_hot_and_multiclass_match_model_eval(fedgrid_bin, tmp_path):
    """one_hot, min_max and a 3-class softmax: Model.evaluate equals fedgrid model eval."""
    import random
    rng = random.Random(5)
    path = tmp_path / "d.csv"
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["a", "b", "color", "cls"])
        for _ in range(300):
            a, b, c = rng.gauss(0, 1), rng.uniform(0, 10), rng.choice(["red", "green", "blue", "grey"])
            s = a + 0.3 * b + {"red": 1, "green": -1, "blue": 0, "grey": 0.5}[c] + rng.gauss(0, 0.3)
            w.writerow([a, b, c, 0 if s < 0.5 else 1 if s < 2 else 2])
    plan = {"format": "fedgrid.plan/v1", "features": ["a", "b", "color"], "label": "cls",
            "preprocess": [{"op": "one_hot", "column": "color", "categories": ["red", "green", "blue"]}, {"op": "min_max"}],
            "params": {"w": {"shape": [5, 8]}, "b": {"shape": [8]}, "v": {"shape": [8, 3]}},
            "forward": [{"op": "matmul", "in": ["x", "w"], "out": "h"}, {"op": "add", "in": ["h", "b"], "out": "h"},
                        {"op": "layer_norm", "in": ["h"], "out": "h"}, {"op": "tanh", "in": ["h"], "out": "h"},
                        {"op": "matmul", "in": ["h", "v"], "out": "z"}, {"op": "softmax", "in": ["z"], "out": "p"}],
            "loss": {"op": "cross_entropy", "in": ["p", "y"]}, "optimizer": {"name": "adam", "learning_rate": 0.05},
            "train": {"epochs": 10, "batch_size": 16, "seed": 2}}
    mp = train_offline(fedgrid_bin, plan, str(path), tmp_path)
    m = fedgrid.load_model(mp)
    assert m.input_names() == ["a", "b", "color=red", "color=green", "color=blue"]
    rows = read_rows(str(path))  # "grey" is not a category: all zeros, as in fedgrid
    got, want = m.evaluate(rows), model_eval(fedgrid_bin, mp, str(path))
    assert got["task"] == want["task"] == "multiclass"
    assert abs(got["loss"] - want["loss"]) < 1e-9 and got["accuracy"] == want["accuracy"]
    probs = m.predict([[r["a"], r["b"], r["color"]] for r in rows[:4]])
    assert all(len(p) == 3 and abs(sum(p) - 1) < 1e-12 for p in probs)
