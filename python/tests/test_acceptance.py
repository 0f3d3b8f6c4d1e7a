"""Acceptance 2: a PyTorch nn.Sequential(Linear, BatchNorm1d, ReLU, Dropout,
Linear, Sigmoid) exported with to_plan trains through a gateway of a live
local network; from_model's predictions match `fedgrid model eval` to 1e-5;
its held-out accuracy is within 0.02 of the same model trained in PyTorch
alone on the same rows (mean of 3 seeds)."""

import copy
import csv

import pytest

torch = pytest.importorskip("torch", reason="torch is not installed (Debian: apt-get install python3-torch); the PyTorch tests need it")
np = pytest.importorskip("numpy", reason="numpy is not installed (Debian: apt-get install python3-numpy)")
from torch import nn  # noqa: E402

import fedgrid  # noqa: E402
import fedgrid.torch as ft  # noqa: E402

FEATURES = ["pregnant", "glucose", "pressure", "triceps", "insulin", "mass", "pedigree", "age"]
EPOCHS, BATCH, LR = 40, 32, 0.01


def load(path):
    with open(path) as f:
        rows = list(csv.DictReader(f))
    return np.array([[float(r[c]) for c in FEATURES] for r in rows]), np.array([float(r["diabetes"]) for r in rows])


def make_net(seed):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(8, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Dropout(0.2), nn.Linear(16, 1), nn.Sigmoid())


def train_in_pytorch(net, x, y, seed):
    """What a PyTorch user would write: standardize with the training rows'
    statistics, Adam, shuffled mini-batches, BCELoss."""
    mean, std = x.mean(0), x.std(0)
    xt, yt = torch.tensor((x - mean) / std, dtype=torch.float32), torch.tensor(y, dtype=torch.float32).reshape(-1, 1)
    opt = torch.optim.Adam(net.parameters(), lr=LR)
    g = torch.Generator().manual_seed(seed)
    net.train()
    for _ in range(EPOCHS):
        order = torch.randperm(len(xt), generator=g)
        for i in range(0, len(xt), BATCH):
            idx = order[i:i + BATCH]
            if len(idx) < 2:
                continue
            opt.zero_grad()
            nn.BCELoss()(net(xt[idx]), yt[idx]).backward()
            opt.step()
    net.eval()
    return lambda xs: net(torch.tensor((xs - mean) / std, dtype=torch.float32)).detach().numpy()[:, 0]


def test_pytorch_model_through_a_gateway(fg, localnet):
    entry = localnet["datasets"]["pima-diabetes"]  # Hospital A's
    d = next(d for d in fg.search("medical") if d.ref == entry["ref"])
    x_up, y_up = load(entry["upload"])
    x_ho, y_ho = load(entry["holdout"])
    fed_acc, torch_acc = [], []
    jobs = []
    for seed in (1, 2, 3):
        net = make_net(seed)
        plan = ft.to_plan(net, features=FEATURES, label="diabetes", loss=nn.BCELoss(), optimizer="adam", learning_rate=LR,
                          epochs=EPOCHS, batch_size=BATCH, seed=seed, preprocess=[{"op": "standardize"}], initial_weights=True)
        jobs.append((seed, net, fg.train(d, plan, wait=False)))
    for seed, net, job in jobs:
        job.wait(progress=False, timeout=600)
        assert job.succeeded, job.error
        model = job.result()
        module = ft.from_model(model)
        assert [type(l).__name__ for l in module.net] == ["Linear", "BatchNorm1d", "ReLU", "Dropout", "Linear", "Sigmoid"]
        # from_model against the binary's model eval, on the held-out rows
        p = module(torch.tensor(x_ho, dtype=torch.float64)).detach().numpy()[:, 0]
        assert np.abs(p - model.predict(x_ho)[:, 0]).max() < 1e-5
        ev = fg.evaluate(model, entry["holdout"])
        loss = float(nn.functional.binary_cross_entropy(torch.tensor(p), torch.tensor(y_ho)))
        acc = float(((p > 0.5) == (y_ho == 1)).mean())
        assert abs(loss - ev["loss"]) < 1e-5 and abs(acc - ev["accuracy"]) < 1e-5, (loss, acc, ev)
        assert abs(fedgrid.roc_auc(p.tolist(), y_ho.tolist()) - ev["auc"]) < 1e-5
        fed_acc.append(acc)
        # the same module, from the same initial weights, trained in PyTorch alone on the same rows
        alone = train_in_pytorch(copy.deepcopy(make_net(seed)), x_up, y_up, seed)
        torch_acc.append(float(((alone(x_ho) > 0.5) == (y_ho == 1)).mean()))
    gap = abs(np.mean(fed_acc) - np.mean(torch_acc))
    print("held-out accuracy through the gateway %s mean %.4f; PyTorch alone %s mean %.4f; gap %.4f" % (
        fed_acc, np.mean(fed_acc), torch_acc, np.mean(torch_acc), gap))
    assert np.mean(fed_acc) > 0.7
    assert gap <= 0.02
