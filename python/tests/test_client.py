"""The client against a live local network (examples/localnet): real
network, gateway and node processes on 127.0.0.1."""

import json
import os
import pytest

import fedgrid

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
LOGREG = os.path.join(ROOT, "examples", "plans", "logreg_pima.json")


def pima(fg):
    found = {d.name: d for d in fg.search("medical")}
    assert set(found) == {"pima-diabetes", "wdbc-breast-cancer"}
    return found["pima-diabetes"]


def test_search_and_preview(fg, localnet):
    d = pima(fg)
    assert d.ref == localnet["datasets"]["pima-diabetes"]["ref"]
    assert d.gateway_name == "Hospital A" and d.rows == 614
    assert d.schema["glucose"] == "number" and "diabetes" in d.schema
    assert "medical" in d.tags
    assert fg.search("nosuchtag") == []
    pv = d.preview()
    try:
        import pandas as pd
    except ImportError:
        assert isinstance(pv, list) and pv and set(pv[0]) == set(d.schema)
    else:
        assert isinstance(pv, pd.DataFrame) and list(pv.columns) == list(d.schema) and len(pv) > 0
        assert pv["glucose"].dtype.kind == "f"


def test_train_result_predict(fg, localnet):
    d = pima(fg)
    with open(LOGREG) as f:
        plan = json.load(f)
    job = fg.train(d, plan, wait=True, progress=True, timeout=300)
    assert job.succeeded and job.metrics["epochs"] == plan["train"]["epochs"]
    assert job.ref in [j.ref for j in fg.jobs()]
    m = job.result()
    assert isinstance(m, fedgrid.Model) and m.provenance["job"]
    holdout = localnet["datasets"]["pima-diabetes"]["holdout"]
    want = fg.evaluate(m, holdout)  # fedgrid model eval
    import csv
    with open(holdout) as f:
        rows = list(csv.DictReader(f))
    got = m.evaluate(rows)
    assert got["rows"] == want["rows"] == 154
    assert abs(got["loss"] - want["loss"]) < 1e-9 and got["accuracy"] == want["accuracy"]
    assert want["accuracy"] > 0.7
    # a plan file path works too, and wait=False returns at once
    job2 = fg.train(d.ref, LOGREG, wait=False)
    assert job2.state in ("queued", "running", "succeeded")
    job2.wait(progress=False, timeout=300)
    assert job2.succeeded


def test_errors_carry_message_and_exit_code(fg):
    d = pima(fg)
    with pytest.raises(fedgrid.FedgridError) as e:
        fg.train(d, {"format": "fedgrid.plan/v1", "features": ["nope"], "label": "diabetes",
                     "params": {"w": {"shape": [1, 1]}}, "forward": [{"op": "matmul", "in": ["x", "w"], "out": "z"}],
                     "loss": {"op": "bce_logits", "in": ["z", "y"]}, "optimizer": {"name": "sgd", "learning_rate": 0.1},
                     "train": {"epochs": 1, "batch_size": 8}})
    assert e.value.exit_code == 1
    assert "nope" in e.value.message
    with pytest.raises(fedgrid.FedgridError) as e:
        fg.job(d.gateway + "/0000000000000000")
    assert e.value.exit_code == 1 and e.value.message


def test_query_and_requests(fg):
    d = pima(fg)
    r = fg.query(d, "glucose", "mean", 0.5, lower=0, upper=200)
    assert isinstance(r, dict) and r  # the DP answer
    req = fg.request_budget(d, 2.5, "pytest asks for more budget")
    assert req["state"] == "pending" and req["epsilon"] == 2.5
    mine = fg.requests(d.gateway)
    assert req["id"] in [x["id"] for x in mine]
    assert req["id"] in [x["id"] for x in fg.requests()]  # every gateway seen in searches


def test_several_datasets(fg):
    found = fg.search("medical")
    with open(LOGREG) as f:
        plan = json.load(f)
    if fg._supports("train", "--dataset stringArray"):
        pytest.skip("this fedgrid binary trains federated; covered by the federated tests")
    with pytest.raises(fedgrid.FedgridError, match="more than once"):
        fg.train(found, plan)
