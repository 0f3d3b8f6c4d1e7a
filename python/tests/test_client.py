"""The client against a live local network (examples/localnet): real
network, gateway and node processes on 127.0.0.1."""

import json
import os
import pytest

import fedgrid

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
LOGREG = os.path.join(ROOT, "examples", "plans", "logreg_pima.json")


def pima(fg):
    """Hospital A's diabetes data (B has diabetes and breast cancer data)."""
    found = {(d.gateway_name, d.name): d for d in fg.search("medical")}
    assert set(found) == {("Hospital A", "pima-diabetes"), ("Hospital B", "pima-diabetes"), ("Hospital B", "wdbc-breast-cancer")}
    return found[("Hospital A", "pima-diabetes")]


def test_search_and_preview(fg, localnet):
    d = pima(fg)
    assert d.ref == localnet["datasets"]["pima-diabetes"]["ref"]
    assert d.rows == 368  # 60 % of the 614 rows not held back
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
    if fg._supports("jobs", "--json"):  # fedgrid jobs asks the gateways, not this client's memory
        fresh = fedgrid.connect(bootstrap=localnet["bootstrap"], key=localnet["key"], network=localnet["network"])
        assert job.ref in [j.ref for j in fresh.jobs(state="succeeded")]
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


def test_several_datasets(fg, localnet):
    """Federated training across both hospitals' diabetes data, when the
    binary can; otherwise a clear error."""
    found = fg.search("diabetes")
    assert sorted(d.gateway_name for d in found) == ["Hospital A", "Hospital B"]
    with open(LOGREG) as f:
        plan = json.load(f)
    # Declared statistics (undeclared ones would be fitted across the hospitals in round 0).
    plan["preprocess"] = [{"op": "min_max", "min": [0, 0, 0, 0, 0, 0, 0, 20], "max": [17, 200, 130, 100, 850, 70, 2.5, 90]}]
    plan["train"] = {"epochs": 5, "batch_size": 32, "seed": 7}
    if not fg.can_federate():
        with pytest.raises(fedgrid.FedgridError, match="more than once"):
            fg.train(found, plan, rounds=2)
        return
    job = fg.train(found, plan, rounds=3, wait=True, timeout=600)
    assert isinstance(job, fedgrid.FederatedJob) and job.ref.startswith("fed:") and job.succeeded
    assert job.progress["epoch"] == 3 and len(job.history) == 3
    assert job.history[-1]["rows"] == 614
    assert fg.job(job.ref).state == "succeeded"
    m = job.result()
    assert m.provenance["gateway"] in {d.gateway for d in found}
    holdout = localnet["datasets"]["pima-diabetes"]["holdout"]
    import csv
    with open(holdout) as f:
        got = m.evaluate(list(csv.DictReader(f)))
    want = fg.evaluate(m, holdout)
    assert abs(got["loss"] - want["loss"]) < 1e-9 and want["accuracy"] > 0.6
    if fg.can_evaluate_federated():
        # Scored on both hospitals' rows: only the sums over both leave.
        ev = fg.evaluate_federated(m, found)
        assert ev["rows"] == 614 and len(ev["gateways"]) == 2 and ev["task"] == "binary"
        assert ev["correct"] == round(ev["accuracy"] * 614) and ev["accuracy"] > 0.6
        assert 0 < ev["auc_error"] < 0.01 and 0.5 < ev["auc"] <= 1
        with pytest.raises(ValueError, match="two gateways"):
            fg.evaluate_federated(m, found[0])
    # datasets of different schemas: the CLI's refusal, as an exception
    with pytest.raises(fedgrid.FedgridError, match="schema"):
        fg.train([found[0], next(d for d in fg.search("oncology"))], plan, rounds=2)
