"""Trained models (``fedgrid.model/v1``): load, inspect, predict.

Prediction follows the model's plan exactly as ``fedgrid model eval`` does
(preprocessing with the stored statistics, then the forward ops in inference
mode) in float64. It uses numpy when it is installed and the input is a numpy
array or a pandas DataFrame, and plain Python lists otherwise.
"""

import json
import math

try:  # optional
    import numpy as _np
except ImportError:  # pragma: no cover - exercised by the no-numpy test
    _np = None

__all__ = ["Model", "load_model"]

MODEL_FORMAT = "fedgrid.model/v1"


def _sigmoid(z):
    if z >= 0:
        return 1.0 / (1.0 + math.exp(-z))
    e = math.exp(z)
    return e / (1.0 + e)


def _softplus(z):
    return max(z, 0.0) + math.log1p(math.exp(-abs(z)))


def _lse(row):
    m = max(row)
    if math.isinf(m):
        return m
    return m + math.log(sum(math.exp(v - m) for v in row))


class Model:
    """A trained model, as released by a gateway (``fedgrid.model/v1``).

    ``plan``, ``params``, ``preprocess``, ``metrics``, ``provenance`` are the
    fields of the JSON; ``features`` and ``label`` come from the plan.
    """

    def __init__(self, doc):
        if isinstance(doc, (bytes, bytearray)):
            doc = doc.decode("utf-8")
        if isinstance(doc, str):
            doc = json.loads(doc)
        if not isinstance(doc, dict) or doc.get("format") != MODEL_FORMAT:
            raise ValueError("not a %s document (format is %r)" % (MODEL_FORMAT, (doc or {}).get("format") if isinstance(doc, dict) else type(doc).__name__))
        self.doc = doc
        self.plan = doc["plan"]
        self.params = doc.get("params") or {}
        self.preprocess = doc.get("preprocess") or []
        self.metrics = doc.get("metrics") or {}
        self.provenance = doc.get("provenance")
        self.privacy = doc.get("privacy")
        self.path = None

    @property
    def features(self):
        return list(self.plan.get("features") or [])

    @property
    def label(self):
        return self.plan.get("label")

    @property
    def task(self):
        """``binary``, ``multiclass`` or ``regression``, from the loss."""
        op = (self.plan.get("loss") or {}).get("op")
        return {"bce": "binary", "bce_logits": "binary", "cross_entropy": "multiclass", "mse": "regression"}.get(op)

    def __repr__(self):
        return "<fedgrid.Model %s: %s -> %s, %s>" % (self.plan.get("name") or "", ", ".join(self.features), self.label, self.task)

    def to_json(self):
        """The model as JSON text."""
        return json.dumps(self.doc)

    def save(self, path):
        """Write the model's JSON to ``path`` (as ``fedgrid result --out`` does)."""
        with open(path, "w") as f:
            json.dump(self.doc, f)
        self.path = path
        return path

    # ---- inputs -----------------------------------------------------------

    def _hot(self):
        return {p["column"]: p["categories"] for p in self.plan.get("preprocess") or [] if p.get("op") == "one_hot"}

    def input_names(self):
        """The names of x's columns after one-hot encoding (``feature=category``)."""
        hot = self._hot()
        out = []
        for f in self.features:
            if f in hot:
                out.extend("%s=%s" % (f, c) for c in hot[f])
            else:
                out.append(f)
        return out

    def _rows(self, data):
        """Raw rows, one value per feature, from a DataFrame, dicts, an array or lists."""
        feats = self.features
        if hasattr(data, "columns") and hasattr(data, "to_dict"):  # pandas DataFrame
            missing = [f for f in feats if f not in data.columns]
            if missing:
                raise ValueError("the data lacks the model's feature(s) %s" % ", ".join(missing))
            return [list(r) for r in data[feats].itertuples(index=False)]
        rows = data.tolist() if hasattr(data, "tolist") else list(data)
        out = []
        for i, r in enumerate(rows):
            if isinstance(r, dict):
                out.append([r[f] for f in feats])
                continue
            r = list(r) if not isinstance(r, (int, float)) else [r]
            if len(r) != len(feats):
                raise ValueError("row %d has %d values; the model takes %d features (%s)" % (i, len(r), len(feats), ", ".join(feats)))
            out.append(r)
        return out

    def inputs(self, data):
        """x for ``data``: one-hot encoded and scaled with the stored statistics
        (a list of rows of floats)."""
        hot = self._hot()
        x = []
        for r in self._rows(data):
            row = []
            for f, v in zip(self.features, r):
                if f in hot:
                    row.extend(1.0 if str(v) == c else 0.0 for c in hot[f])
                else:
                    row.append(float(v))
            x.append(row)
        for st in self.preprocess:
            if st["op"] == "standardize":
                m, s = st["mean"], st["std"]
                x = [[(v - m[j]) / s[j] for j, v in enumerate(row)] for row in x]
            elif st["op"] == "min_max":
                lo, hi = st["min"], st["max"]
                x = [[(v - lo[j]) / (hi[j] - lo[j]) for j, v in enumerate(row)] for row in x]
        return x

    # ---- prediction -------------------------------------------------------

    def predict(self, data):
        """The model's prediction for each row of ``data``: what the plan's loss
        takes (for ``bce`` after a sigmoid, P(label=1); for ``cross_entropy``
        after softmax, class probabilities; otherwise the raw output), one row
        of outputs per input row.

        ``data`` is a pandas DataFrame with the feature columns, a numpy array,
        or a list of rows (lists in ``features`` order, or dicts). A numpy or
        pandas input gives a numpy array of shape (rows, outputs); a list gives
        a list of lists, computed without numpy.
        """
        return self._forward(data)[self.plan["loss"]["in"][0]]

    def _forward(self, data):
        use_np = _np is not None and (isinstance(data, _np.ndarray) or hasattr(data, "to_numpy"))
        x = self.inputs(data)
        if use_np:
            return self._forward_np(_np.asarray(x, dtype=_np.float64).reshape(len(x), -1))
        return self._forward_list(x)

    def _forward_np(self, x):
        np = _np
        vals = {"x": x}
        for name, t in self.params.items():
            vals[name] = np.asarray(t["data"], dtype=np.float64).reshape(t["shape"])
        for op in self.plan["forward"]:
            a = vals[op["in"][0]]
            kind = op["op"]
            if kind == "matmul":
                out = a @ vals[op["in"][1]]
            elif kind in ("add", "sub", "mul"):
                b = vals[op["in"][1]]
                out = a + b if kind == "add" else a - b if kind == "sub" else a * b
            elif kind == "relu":
                out = np.maximum(a, 0)
            elif kind == "sigmoid":
                out = np.where(a >= 0, 1 / (1 + np.exp(-np.abs(a))), np.exp(-np.abs(a)) / (1 + np.exp(-np.abs(a))))
            elif kind == "tanh":
                out = np.tanh(a)
            elif kind in ("softmax", "log_softmax"):
                m = a.max(axis=1, keepdims=True)
                lse = m + np.log(np.exp(a - m).sum(axis=1, keepdims=True))
                out = np.exp(a - lse) if kind == "softmax" else a - lse
            elif kind == "dropout":
                out = a
            elif kind == "layer_norm":
                eps = op.get("eps", 1e-5)
                m = a.mean(axis=1, keepdims=True)
                v = ((a - m) ** 2).mean(axis=1, keepdims=True)
                out = (a - m) / np.sqrt(v + eps)
            elif kind == "batch_norm":
                eps = op.get("eps", 1e-5)
                out = (a - vals[op["in"][1]]) / np.sqrt(vals[op["in"][2]] + eps)
            else:
                raise ValueError("unknown op %r" % kind)
            vals[op["out"]] = out
        return vals

    def _forward_list(self, x):
        vals = {"x": x}
        for name, t in self.params.items():
            d, shape = [float(v) for v in t["data"]], t["shape"]
            vals[name] = d if len(shape) == 1 else [d[i * shape[1]:(i + 1) * shape[1]] for i in range(shape[0])]

        def is_mat(v):
            return bool(v) and isinstance(v[0], list)

        def elementwise(f, a, b):
            if is_mat(a) and is_mat(b):
                return [[f(u, w) for u, w in zip(ra, rb)] for ra, rb in zip(a, b)]
            if is_mat(a):
                return [[f(u, b[0] if len(b) == 1 else b[j]) for j, u in enumerate(ra)] for ra in a]
            if is_mat(b):
                return [[f(a[0] if len(a) == 1 else a[j], w) for j, w in enumerate(rb)] for rb in b]
            if len(a) == len(b):
                return [f(u, w) for u, w in zip(a, b)]
            return [f(a[0], w) for w in b] if len(a) == 1 else [f(u, b[0]) for u in a]

        def each(f, a):
            return [[f(v) for v in r] for r in a] if is_mat(a) else [f(v) for v in a]

        for op in self.plan["forward"]:
            a = vals[op["in"][0]]
            kind = op["op"]
            if kind == "matmul":
                b = vals[op["in"][1]]
                cols = list(zip(*b))
                out = [[sum(u * w for u, w in zip(r, c)) for c in cols] for r in a]
            elif kind in ("add", "sub", "mul"):
                f = {"add": lambda u, w: u + w, "sub": lambda u, w: u - w, "mul": lambda u, w: u * w}[kind]
                out = elementwise(f, a, vals[op["in"][1]])
            elif kind == "relu":
                out = each(lambda v: max(v, 0.0), a)
            elif kind == "sigmoid":
                out = each(_sigmoid, a)
            elif kind == "tanh":
                out = each(math.tanh, a)
            elif kind in ("softmax", "log_softmax"):
                out = []
                for r in a:
                    l = _lse(r)
                    out.append([math.exp(v - l) if kind == "softmax" else v - l for v in r])
            elif kind == "dropout":
                out = a
            elif kind == "layer_norm":
                eps = op.get("eps", 1e-5)
                out = []
                for r in a:
                    m = sum(r) / len(r)
                    s = 1 / math.sqrt(sum((v - m) ** 2 for v in r) / len(r) + eps)
                    out.append([(v - m) * s for v in r])
            elif kind == "batch_norm":
                eps = op.get("eps", 1e-5)
                rm, rv = vals[op["in"][1]], vals[op["in"][2]]
                out = [[(v - rm[j]) / math.sqrt(rv[j] + eps) for j, v in enumerate(r)] for r in a]
            else:
                raise ValueError("unknown op %r" % kind)
            vals[op["out"]] = out
        return vals

    def evaluate(self, data, labels=None):
        """Mean loss, accuracy and (binary) AUC on labelled rows, computed in
        Python like ``fedgrid model eval``: ``data`` with the label column
        (DataFrame or dicts), or features plus ``labels``."""
        if labels is None:
            if hasattr(data, "columns"):
                labels = list(data[self.label])
            else:
                labels = [r[self.label] for r in data]
        labels = [float(v) for v in labels]
        if not hasattr(data, "columns") and data and isinstance(data[0], dict):
            data = [{f: r[f] for f in self.features} for r in data]
        vals = self._forward(data)
        slot, kind = _loss_input(self.plan)
        z = vals[slot]
        z = z.tolist() if hasattr(z, "tolist") else z
        return evaluate_scores(self.plan["loss"]["op"], kind, z, labels)


def _loss_input(plan):
    """What the loss is computed from, as fedgrid does: (value name, kind),
    kind one of logits, logprobs, values."""
    op, pred = plan["loss"]["op"], plan["loss"]["in"][0]
    prod = None
    for o in plan["forward"]:
        if o["out"] == pred:
            prod = o
    if op == "bce" and prod is not None and prod["op"] == "sigmoid":
        return prod["in"][0], "logits"
    if op == "cross_entropy" and prod is not None:
        if prod["op"] == "softmax":
            return prod["in"][0], "logits"
        if prod["op"] == "log_softmax":
            return pred, "logprobs"
    return pred, "values" if op == "mse" else "logits"


def evaluate_scores(op, kind, z, y):
    """Loss, accuracy and AUC from the loss input z (rows) and labels y."""
    n = len(y)
    losses, scores = [], []
    for r, yr in zip(z, y):
        if op in ("bce", "bce_logits"):
            losses.append(_softplus(r[0]) - yr * r[0])
            scores.append(_sigmoid(r[0]))
        elif op == "cross_entropy":
            c = int(yr)
            losses.append(-r[c] if kind == "logprobs" else _lse(r) - r[c])
            scores.append(float(max(range(len(r)), key=lambda j: r[j])))
        else:
            losses.append((r[0] - yr) ** 2)
            scores.append(r[0])
    out = {"rows": n, "loss": sum(losses) / n if n else 0.0}
    if op in ("bce", "bce_logits"):
        out["task"] = "binary"
        out["accuracy"] = sum((s > 0.5) == (yr == 1) for s, yr in zip(scores, y)) / n
        out["auc"] = roc_auc(scores, y)
    elif op == "cross_entropy":
        out["task"] = "multiclass"
        out["accuracy"] = sum(s == yr for s, yr in zip(scores, y)) / n
    else:
        out["task"] = "regression"
    return out


def roc_curve(scores, y):
    """The ROC curve of scores against 0/1 labels: (false positive rates,
    true positive rates), from the highest threshold down, starting at (0, 0)."""
    pairs = sorted(zip(scores, y), key=lambda p: -p[0])
    pos = sum(1 for _, v in pairs if v == 1)
    neg = len(pairs) - pos
    fpr, tpr = [0.0], [0.0]
    tp = fp = 0
    i = 0
    while i < len(pairs):
        j = i
        while j < len(pairs) and pairs[j][0] == pairs[i][0]:
            if pairs[j][1] == 1:
                tp += 1
            else:
                fp += 1
            j += 1
        fpr.append(fp / neg if neg else 0.0)
        tpr.append(tp / pos if pos else 0.0)
        i = j
    return fpr, tpr


def roc_auc(scores, y):
    """Area under the ROC curve (ties count half); 0 when a class is absent."""
    fpr, tpr = roc_curve(scores, y)
    if fpr[-1] == 0 or tpr[-1] == 0:
        return 0.0
    return sum((fpr[i] - fpr[i - 1]) * (tpr[i] + tpr[i - 1]) / 2 for i in range(1, len(fpr)))


def load_model(source):
    """A Model from a path, JSON text, bytes, a dict, or a Model."""
    if isinstance(source, Model):
        return source
    if isinstance(source, dict) or isinstance(source, (bytes, bytearray)):
        return Model(source)
    if isinstance(source, str) and source.lstrip().startswith("{"):
        return Model(source)
    with open(source) as f:
        m = Model(f.read())
    m.path = str(source)
    return m
