"""fedgrid.torch: PyTorch models in and out. Skipped, saying why, without torch."""

import csv
import json
import os
import subprocess

import pytest

torch = pytest.importorskip("torch", reason="torch is not installed (Debian: apt-get install python3-torch); the PyTorch tests need it")
np = pytest.importorskip("numpy", reason="numpy is not installed (Debian: apt-get install python3-numpy)")
from torch import nn  # noqa: E402

import fedgrid  # noqa: E402
import fedgrid.torch as ft  # noqa: E402

FEATURES = ["pregnant", "glucose", "pressure", "triceps", "insulin", "mass", "pedigree", "age"]


def pima_arrays(data_dir):
    with open(os.path.join(data_dir, "pima_diabetes.csv")) as f:
        rows = list(csv.DictReader(f))
    x = np.array([[float(r[c]) for c in FEATURES] for r in rows])
    y = np.array([float(r["diabetes"]) for r in rows])
    return x, y


def write_csv(path, x, y):
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(FEATURES + ["diabetes"])
        for r, v in zip(x, y):
            w.writerow([repr(float(a)) for a in r] + [int(v)])


def every_layer():
    return nn.Sequential(nn.Linear(8, 12), nn.BatchNorm1d(12), nn.ReLU(), nn.Dropout(0.3), nn.Linear(12, 6), nn.LayerNorm(6),
                         nn.Tanh(), nn.Linear(6, 4), nn.Sigmoid(), nn.Linear(4, 3), nn.Softmax(dim=1))


def test_to_plan_every_layer(fedgrid_bin, tmp_path):
    torch.manual_seed(1)
    net = every_layer()
    plan = ft.to_plan(net, features=FEATURES, label="cls", loss="cross_entropy", optimizer=torch.optim.Adam(net.parameters(), lr=0.02),
                      epochs=5, batch_size=16, initial_weights=True)
    ops = [o["op"] for o in plan["forward"]]
    assert ops == ["matmul", "add", "batch_norm", "mul", "add", "relu", "dropout", "matmul", "add", "layer_norm", "mul", "add",
                   "tanh", "matmul", "add", "sigmoid", "matmul", "add", "softmax"]
    assert plan["optimizer"] == {"name": "adam", "learning_rate": 0.02, "beta1": 0.9, "beta2": 0.999, "epsilon": 1e-08}
    assert plan["weights"]["l0_w"]["shape"] == [8, 12] and plan["weights"]["l1_var"]["data"] == [1.0] * 12
    assert np.allclose(np.array(plan["weights"]["l0_w"]["data"]).reshape(8, 12), net[0].weight.detach().numpy().T)
    pf = tmp_path / "p.json"
    pf.write_text(json.dumps(plan))
    out = subprocess.run([fedgrid_bin, "plan", "check", "--plan", str(pf)], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert "multiclass, 3 output(s)" in out.stdout


def test_unsupported_layer_is_named():
    with pytest.raises(ft.UnsupportedLayer, match=r"layer 2 \(Conv1d\) is not supported"):
        ft.to_plan(nn.Sequential(nn.Linear(8, 4), nn.ReLU(), nn.Conv1d(1, 1, 1)), features=FEATURES, label="diabetes", loss="mse")
    with pytest.raises(ft.UnsupportedLayer, match="ELU"):
        ft.to_plan(nn.Sequential(nn.Linear(8, 4), nn.ELU()), features=FEATURES, label="diabetes", loss="mse")
    with pytest.raises(ft.UnsupportedLayer, match="dim=0"):
        ft.to_plan(nn.Sequential(nn.Linear(8, 4), nn.Softmax(dim=0)), features=FEATURES, label="diabetes", loss="cross_entropy")
    with pytest.raises(ValueError, match="takes 5 inputs"):
        ft.to_plan(nn.Sequential(nn.Linear(5, 1)), features=FEATURES, label="diabetes", loss="mse")


def model_doc(plan, params):
    return {"format": "fedgrid.model/v1", "plan": plan, "params": params, "preprocess": [],
            "metrics": {"train_loss": [], "epochs": 0, "train_rows": 0, "validation_rows": 0, "steps": 0}}


def test_inference_matches_pytorch(fedgrid_bin, data_dir, tmp_path):
    """A module's eval-mode outputs equal fedgrid's: Model.predict, from_model,
    and `fedgrid model eval`'s loss, for every supported layer."""
    torch.manual_seed(2)
    x, y = pima_arrays(data_dir)
    x = (x - x.mean(0)) / x.std(0)
    net = nn.Sequential(nn.Linear(8, 12), nn.BatchNorm1d(12), nn.ReLU(), nn.Dropout(0.3), nn.Linear(12, 6), nn.LayerNorm(6),
                        nn.Tanh(), nn.Linear(6, 1), nn.Sigmoid()).double()
    with torch.no_grad():  # non-trivial running statistics and affine parameters
        net[1].running_mean.uniform_(-1, 1)
        net[1].running_var.uniform_(0.5, 2)
        net[1].weight.uniform_(0.5, 1.5)
        net[5].bias.uniform_(-0.5, 0.5)
    net.eval()
    plan = ft.to_plan(net, features=FEATURES, label="diabetes", loss="bce", epochs=1, batch_size=8, initial_weights=True)
    m = fedgrid.Model(model_doc(plan, plan["weights"]))
    want = net(torch.tensor(x)).detach().numpy()
    assert np.abs(m.predict(x) - want).max() < 1e-12
    mod = ft.from_model(m)
    assert isinstance(mod.net, nn.Sequential) and [type(l).__name__ for l in mod.net] == [type(l).__name__ for l in net]
    assert np.abs(mod(torch.tensor(x)).detach().numpy() - want).max() < 1e-12
    mf = tmp_path / "m.json"
    m.save(str(mf))
    cf = tmp_path / "d.csv"
    write_csv(cf, x, y)
    ev = json.loads(subprocess.run([fedgrid_bin, "model", "eval", "--model", str(mf), "--data", str(cf), "--json"],
                                   capture_output=True, check=True).stdout)
    p = torch.tensor(want[:, 0])
    torch_loss = nn.functional.binary_cross_entropy(p, torch.tensor(y)).item()
    assert abs(ev["loss"] - torch_loss) < 1e-9
    assert abs(ev["accuracy"] - float(((want[:, 0] > 0.5) == (y == 1)).mean())) < 1e-12


def test_one_training_step_matches_pytorch(fedgrid_bin, data_dir, tmp_path):
    """One full-batch SGD step of fedgrid (BatchNorm1d and LayerNorm in
    training mode, no dropout) gives PyTorch's weights and running statistics."""
    torch.manual_seed(3)
    x, y = pima_arrays(data_dir)
    x, y = (x - x.mean(0)) / x.std(0), y
    x, y = x[:200], y[:200]
    net = nn.Sequential(nn.Linear(8, 10), nn.BatchNorm1d(10, momentum=0.3), nn.ReLU(), nn.Linear(10, 5), nn.LayerNorm(5),
                        nn.Tanh(), nn.Linear(5, 1), nn.Sigmoid()).double()
    plan = ft.to_plan(net, features=FEATURES, label="diabetes", loss=nn.BCELoss(), optimizer="sgd", learning_rate=0.5,
                      epochs=1, batch_size=200, initial_weights=True)
    pf, cf, mf = tmp_path / "p.json", tmp_path / "d.csv", tmp_path / "m.json"
    pf.write_text(json.dumps(plan))
    write_csv(cf, x, y)
    subprocess.run([fedgrid_bin, "plan", "run", "--plan", str(pf), "--data", str(cf), "--out", str(mf)], check=True, capture_output=True)
    trained = ft.from_model(str(mf))
    net.train()
    opt = torch.optim.SGD(net.parameters(), lr=0.5)
    loss = nn.BCELoss()(net(torch.tensor(x)), torch.tensor(y).reshape(-1, 1))
    loss.backward()
    opt.step()
    want, got = net.state_dict(), trained.net.state_dict()
    for k, v in want.items():
        if k.endswith("num_batches_tracked"):
            continue
        # fedgrid's default engine multiplies in float32
        assert np.abs(got[k].numpy() - v.numpy()).max() < 1e-5, k


def test_from_model_general_plan(fedgrid_bin, data_dir, tmp_path):
    """A plan that is not a chain of layers comes back as a PlanNet."""
    plan = {"format": "fedgrid.plan/v1", "features": FEATURES, "label": "diabetes", "preprocess": [{"op": "standardize"}],
            "params": {"w": {"shape": [8, 8]}, "v": {"shape": [8, 1]}, "b": {"shape": [1]}},
            "forward": [{"op": "matmul", "in": ["x", "w"], "out": "h"}, {"op": "tanh", "in": ["h"], "out": "h"},
                        {"op": "add", "in": ["h", "x"], "out": "r"}, {"op": "matmul", "in": ["r", "v"], "out": "z"},
                        {"op": "add", "in": ["z", "b"], "out": "z"}],
            "loss": {"op": "bce_logits", "in": ["z", "y"]}, "optimizer": {"name": "adam", "learning_rate": 0.01},
            "train": {"epochs": 3, "batch_size": 32, "seed": 1}}
    pf, mf = tmp_path / "p.json", tmp_path / "m.json"
    pf.write_text(json.dumps(plan))
    subprocess.run([fedgrid_bin, "plan", "run", "--plan", str(pf), "--data", os.path.join(data_dir, "pima_diabetes.csv"), "--out", str(mf)],
                   check=True, capture_output=True)
    m = fedgrid.load_model(str(mf))
    mod = ft.from_model(m)
    assert isinstance(mod.net, ft.PlanNet)
    x, _ = pima_arrays(data_dir)
    assert np.abs(mod(torch.tensor(x)).detach().numpy() - m.predict(x)).max() < 1e-12
