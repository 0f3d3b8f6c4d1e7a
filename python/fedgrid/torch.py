"""PyTorch in and out (needs torch).

:func:`to_plan` turns an ``nn.Sequential`` into a ``fedgrid.plan/v1`` plan;
:func:`from_model` turns a trained ``fedgrid.model/v1`` back into an
``nn.Module`` holding the trained weights.

Supported layers: Linear, ReLU, Tanh, Sigmoid, Softmax, LogSoftmax (over the
feature dimension), Dropout, LayerNorm (over the last dimension) and
BatchNorm1d (with running statistics). Anything else raises
:class:`UnsupportedLayer` naming the layer.
"""


import torch as _torch
from torch import nn as _nn
import torch.nn.functional as _F

from .model import load_model

__all__ = ["UnsupportedLayer", "from_model", "to_plan", "FedgridModule", "PlanNet"]

PLAN_FORMAT = "fedgrid.plan/v1"


class UnsupportedLayer(ValueError):
    """A layer fedgrid plans cannot express."""


def _flatten(model):
    if isinstance(model, _nn.Sequential):
        out = []
        for m in model:
            out.extend(_flatten(m))
        return out
    return [model]


def _tensor(t):
    t = t.detach().to(_torch.float64).cpu()
    return {"shape": list(t.shape), "data": [float(v) for v in t.reshape(-1).tolist()]}


_LOSSES = {"bce": "bce", "bce_logits": "bce_logits", "cross_entropy": "cross_entropy", "mse": "mse", "nll": "cross_entropy",
           "BCELoss": "bce", "BCEWithLogitsLoss": "bce_logits", "CrossEntropyLoss": "cross_entropy", "NLLLoss": "cross_entropy", "MSELoss": "mse"}


def _optimizer(optimizer, learning_rate):
    if isinstance(optimizer, dict):
        return dict(optimizer)
    if isinstance(optimizer, str):
        name = optimizer.lower()
        if name not in ("adam", "sgd"):
            raise ValueError("optimizer %r: fedgrid trains with adam or sgd" % optimizer)
        return {"name": name, "learning_rate": float(learning_rate if learning_rate is not None else (0.001 if name == "adam" else 0.01))}
    if isinstance(optimizer, _torch.optim.Optimizer):
        g = optimizer.param_groups[0]
        if isinstance(optimizer, _torch.optim.Adam):
            b1, b2 = g["betas"]
            o = {"name": "adam", "learning_rate": float(g["lr"]), "beta1": float(b1), "beta2": float(b2), "epsilon": float(g["eps"])}
        elif isinstance(optimizer, _torch.optim.SGD):
            o = {"name": "sgd", "learning_rate": float(g["lr"])}
            if g.get("momentum"):
                o["momentum"] = float(g["momentum"])
            if g.get("nesterov") or g.get("dampening"):
                raise ValueError("optimizer: SGD with nesterov or dampening is not supported")
        else:
            raise ValueError("optimizer %s: fedgrid trains with Adam or SGD" % type(optimizer).__name__)
        if g.get("weight_decay"):
            o["weight_decay"] = float(g["weight_decay"])
        return o
    raise ValueError("optimizer must be 'adam', 'sgd', a dict or a torch.optim.Adam/SGD")


def to_plan(model, features, label, loss, optimizer="adam", epochs=10, batch_size=32, dp=None, learning_rate=None,
            preprocess=None, seed=0, validation_fraction=0.0, initial_weights=False, name=None):
    """A ``fedgrid.plan/v1`` plan (a dict) that trains ``model``.

    ``model``: an ``nn.Sequential`` of the supported layers. ``features``: the
    dataset's feature columns, in the order of the first Linear's inputs
    (after one-hot encoding, when ``preprocess`` has ``one_hot``); ``label``:
    the label column. ``loss``: ``"bce"`` (after a final Sigmoid),
    ``"bce_logits"``, ``"cross_entropy"`` (on logits, or after Softmax or
    LogSoftmax), ``"mse"``, or the matching torch loss (``nn.BCELoss()``...).
    ``optimizer``: ``"adam"``/``"sgd"`` with ``learning_rate``, a dict of the
    plan's optimizer fields, or a ``torch.optim.Adam``/``SGD`` (its lr, betas,
    eps, momentum and weight decay are copied). ``dp``: ``None``, or
    ``{"noise_multiplier", "max_grad_norm", "delta"}`` for DP-SGD.
    ``preprocess``: the plan's preprocess list (e.g. ``[{"op": "standardize"}]``).
    ``initial_weights``: put the module's current weights (and BatchNorm
    running statistics) in the plan, so that training starts from them.
    """
    features = list(features)
    if not features:
        raise ValueError("features is empty")
    loss_name = loss if isinstance(loss, str) else type(loss).__name__
    if loss_name not in _LOSSES:
        raise ValueError("loss %r: use bce, bce_logits, cross_entropy, mse or the matching torch loss" % loss_name)
    loss_op = _LOSSES[loss_name]
    layers = _flatten(model)
    hot = {p["column"]: len(p["categories"]) for p in preprocess or [] if p.get("op") == "one_hot"}
    width = sum(hot.get(f, 1) for f in features)
    params, weights, forward = {}, {}, []
    cur = "x"
    count = [0]

    def out_name():
        count[0] += 1
        return "h%d" % count[0]

    def emit(op, ins, **settings):
        nonlocal cur
        o = {"op": op, "in": ins, "out": out_name()}
        o.update(settings)
        forward.append(o)
        cur = o["out"]

    def param(pname, shape, init, value=None):
        params[pname] = {"shape": list(shape), "init": init}
        if initial_weights and value is not None:
            weights[pname] = _tensor(value)

    for i, layer in enumerate(layers):
        kind = type(layer).__name__
        where = "layer %d (%s)" % (i, kind)
        if isinstance(layer, _nn.Linear):
            if layer.in_features != width:
                raise ValueError("%s takes %d inputs, but the layer before gives %d (features after one_hot: %d)" % (where, layer.in_features, width, sum(hot.get(f, 1) for f in features)))
            param("l%d_w" % i, [layer.in_features, layer.out_features], "glorot", layer.weight.t())
            emit("matmul", [cur, "l%d_w" % i])
            if layer.bias is not None:
                param("l%d_b" % i, [layer.out_features], "zeros", layer.bias)
                emit("add", [cur, "l%d_b" % i])
            width = layer.out_features
        elif isinstance(layer, (_nn.ReLU, _nn.Tanh, _nn.Sigmoid)):
            emit({_nn.ReLU: "relu", _nn.Tanh: "tanh", _nn.Sigmoid: "sigmoid"}[type(layer)], [cur])
        elif isinstance(layer, (_nn.Softmax, _nn.LogSoftmax)):
            if layer.dim not in (None, 1, -1):
                raise UnsupportedLayer("%s: dim=%s; fedgrid's softmax is over the features (dim=1)" % (where, layer.dim))
            emit("softmax" if isinstance(layer, _nn.Softmax) else "log_softmax", [cur])
        elif isinstance(layer, _nn.Dropout):
            emit("dropout", [cur], p=float(layer.p))
        elif isinstance(layer, _nn.LayerNorm):
            if tuple(layer.normalized_shape) != (width,):
                raise UnsupportedLayer("%s: normalized_shape %s; fedgrid normalises the last dimension only, (%d,)" % (where, tuple(layer.normalized_shape), width))
            emit("layer_norm", [cur], eps=float(layer.eps))
            if layer.elementwise_affine:
                param("l%d_w" % i, [width], "ones", layer.weight)
                emit("mul", [cur, "l%d_w" % i])
                if getattr(layer, "bias", None) is not None:
                    param("l%d_b" % i, [width], "zeros", layer.bias)
                    emit("add", [cur, "l%d_b" % i])
        elif isinstance(layer, _nn.BatchNorm1d):
            if layer.num_features != width:
                raise ValueError("%s has %d features, the layer before gives %d" % (where, layer.num_features, width))
            if not layer.track_running_stats or layer.momentum is None:
                raise UnsupportedLayer("%s: fedgrid's batch_norm keeps running statistics with a fixed momentum (track_running_stats=True, momentum not None)" % where)
            param("l%d_mean" % i, [width], "zeros", layer.running_mean)
            param("l%d_var" % i, [width], "ones", layer.running_var)
            emit("batch_norm", [cur, "l%d_mean" % i, "l%d_var" % i], eps=float(layer.eps), momentum=float(layer.momentum))
            if layer.affine:
                param("l%d_w" % i, [width], "ones", layer.weight)
                emit("mul", [cur, "l%d_w" % i])
                param("l%d_b" % i, [width], "zeros", layer.bias)
                emit("add", [cur, "l%d_b" % i])
        else:
            raise UnsupportedLayer("%s is not supported by fedgrid plans (supported: Linear, ReLU, Tanh, Sigmoid, Softmax, LogSoftmax, Dropout, LayerNorm, BatchNorm1d)" % where)
    if not forward:
        raise ValueError("the model has no layers")
    plan = {"format": PLAN_FORMAT, "name": name or type(model).__name__.lower(), "features": features, "label": label}
    if preprocess:
        plan["preprocess"] = [dict(p) for p in preprocess]
    plan.update({"params": params, "forward": forward, "loss": {"op": loss_op, "in": [cur, "y"]},
                 "optimizer": _optimizer(optimizer, learning_rate),
                 "train": {"epochs": int(epochs), "batch_size": int(batch_size), "seed": int(seed)}})
    if validation_fraction:
        plan["train"]["validation_fraction"] = float(validation_fraction)
    if dp is not None:
        d = dict(dp)
        plan["privacy"] = {"dp_sgd": {"noise_multiplier": float(d["noise_multiplier"]), "max_grad_norm": float(d["max_grad_norm"])},
                           "delta": float(d.get("delta", 1e-5))}
    if weights:
        plan["weights"] = weights
    return plan


# ---- out ------------------------------------------------------------------


def _param(model, name, dtype):
    t = model.params[name]
    return _torch.tensor(t["data"], dtype=dtype).reshape(t["shape"])


def _sequential(model, dtype):
    """The forward ops as an nn.Sequential when they are a simple chain of
    supported layers (as to_plan writes them); else None."""
    ops = model.plan["forward"]
    params = model.params
    stats = set()
    for o in ops:
        if o["op"] == "batch_norm":
            stats.update(o["in"][1:])
    layers, cur, i = [], "x", 0

    def is_vec(name, k):
        return name in params and name not in stats and params[name]["shape"] == [k]

    def affine(j, k):
        """mul by a [k] param then optionally add a [k] param, after op j-1."""
        w = b = None
        if j < len(ops) and ops[j]["op"] == "mul" and ops[j]["in"][0] == ops[j - 1]["out"] and is_vec(ops[j]["in"][1], k):
            w = ops[j]["in"][1]
            j += 1
            if j < len(ops) and ops[j]["op"] == "add" and ops[j]["in"][0] == ops[j - 1]["out"] and is_vec(ops[j]["in"][1], k):
                b = ops[j]["in"][1]
                j += 1
        return w, b, j

    width = None
    while i < len(ops):
        o = ops[i]
        if o["in"][0] != cur:
            return None
        kind = o["op"]
        if kind == "matmul":
            w = o["in"][1]
            if w not in params or len(params[w]["shape"]) != 2:
                return None
            k_in, k_out = params[w]["shape"]
            bias = None
            if i + 1 < len(ops) and ops[i + 1]["op"] == "add" and ops[i + 1]["in"][0] == o["out"] and is_vec(ops[i + 1]["in"][1], k_out):
                bias = ops[i + 1]["in"][1]
            lin = _nn.Linear(k_in, k_out, bias=bias is not None).to(dtype)
            with _torch.no_grad():
                lin.weight.copy_(_param(model, w, dtype).t())
                if bias:
                    lin.bias.copy_(_param(model, bias, dtype))
            layers.append(lin)
            i += 2 if bias else 1
            width = k_out
        elif kind in ("relu", "tanh", "sigmoid", "softmax", "log_softmax", "dropout"):
            layers.append({"relu": _nn.ReLU, "tanh": _nn.Tanh, "sigmoid": _nn.Sigmoid}.get(kind, lambda: None)()
                          if kind in ("relu", "tanh", "sigmoid") else
                          _nn.Softmax(dim=1) if kind == "softmax" else _nn.LogSoftmax(dim=1) if kind == "log_softmax" else
                          _nn.Dropout(o.get("p", 0.5)))
            i += 1
        elif kind in ("layer_norm", "batch_norm") and width is not None:
            w, b, j = affine(i + 1, width)
            eps = o.get("eps", 1e-5)
            if kind == "layer_norm":
                if w is not None and b is None:
                    return None
                ln = _nn.LayerNorm(width, eps=eps, elementwise_affine=w is not None).to(dtype)
                if w is not None:
                    with _torch.no_grad():
                        ln.weight.copy_(_param(model, w, dtype))
                        ln.bias.copy_(_param(model, b, dtype))
                layers.append(ln)
            else:
                if w is not None and b is None:
                    return None
                bn = _nn.BatchNorm1d(width, eps=eps, momentum=o.get("momentum", 0.1), affine=w is not None).to(dtype)
                with _torch.no_grad():
                    bn.running_mean.copy_(_param(model, o["in"][1], dtype))
                    bn.running_var.copy_(_param(model, o["in"][2], dtype))
                    if w is not None:
                        bn.weight.copy_(_param(model, w, dtype))
                        bn.bias.copy_(_param(model, b, dtype))
                layers.append(bn)
            i = j
        else:
            return None
        cur = ops[i - 1]["out"]
    if cur != model.plan["loss"]["in"][0]:
        return None
    return _nn.Sequential(*layers)


class PlanNet(_nn.Module):
    """Any plan's forward ops in torch: the params as ``nn.Parameter`` (the
    batch_norm running statistics as buffers), the ops executed in order.
    Dropout and batch_norm follow ``self.training``."""

    def __init__(self, model, dtype=_torch.float64):
        super().__init__()
        self.ops = [dict(o) for o in model.plan["forward"]]
        self.pred = model.plan["loss"]["in"][0]
        stats = {n for o in self.ops if o["op"] == "batch_norm" for n in o["in"][1:]}
        self.weights = _nn.ParameterDict()
        for name in sorted(model.params):
            t = _param(model, name, dtype)
            if name in stats:
                self.register_buffer("stat_" + name, t)
            else:
                self.weights[name] = _nn.Parameter(t)

    def _value(self, vals, name):
        if name in vals:
            return vals[name]
        if name in self.weights:
            return self.weights[name]
        return getattr(self, "stat_" + name)

    def forward(self, x):
        vals = {"x": x}
        for o in self.ops:
            a = self._value(vals, o["in"][0])
            kind = o["op"]
            if kind == "matmul":
                out = a @ self._value(vals, o["in"][1])
            elif kind in ("add", "sub", "mul"):
                b = self._value(vals, o["in"][1])
                out = a + b if kind == "add" else a - b if kind == "sub" else a * b
            elif kind == "relu":
                out = _torch.relu(a)
            elif kind == "sigmoid":
                out = _torch.sigmoid(a)
            elif kind == "tanh":
                out = _torch.tanh(a)
            elif kind == "softmax":
                out = _torch.softmax(a, dim=1)
            elif kind == "log_softmax":
                out = _torch.log_softmax(a, dim=1)
            elif kind == "dropout":
                out = _F.dropout(a, o.get("p", 0.5), self.training)
            elif kind == "layer_norm":
                out = _F.layer_norm(a, a.shape[-1:], eps=o.get("eps", 1e-5))
            elif kind == "batch_norm":
                out = _F.batch_norm(a, self._value(vals, o["in"][1]), self._value(vals, o["in"][2]), training=self.training,
                                    momentum=o.get("momentum", 0.1), eps=o.get("eps", 1e-5))
            else:
                raise ValueError("unknown op %r" % kind)
            vals[o["out"]] = out
        return vals[self.pred]


class FedgridModule(_nn.Module):
    """A trained fedgrid model as a torch module: ``preprocess`` (the stored
    standardize/min_max statistics, as buffers) then ``net`` (an
    ``nn.Sequential`` when the plan is a chain of supported layers, else a
    :class:`PlanNet`). Its input is x after one-hot encoding, columns named by
    ``input_names``; its output is the model's prediction (what the plan's
    loss takes). ``features``, ``label`` and ``plan`` are the model's."""

    def __init__(self, model, dtype=_torch.float64):
        super().__init__()
        self.plan = model.plan
        self.features = model.features
        self.label = model.label
        self.input_names = model.input_names()
        self.steps = []
        for k, st in enumerate(model.preprocess):
            if st["op"] == "standardize":
                sub, div = st["mean"], st["std"]
            elif st["op"] == "min_max":
                sub, div = st["min"], [hi - lo for lo, hi in zip(st["min"], st["max"])]
            else:
                continue
            self.register_buffer("pre%d_sub" % k, _torch.tensor(sub, dtype=dtype))
            self.register_buffer("pre%d_div" % k, _torch.tensor(div, dtype=dtype))
            self.steps.append(k)
        net = _sequential(model, dtype)
        self.net = net if net is not None else PlanNet(model, dtype)

    def forward(self, x):
        for k in self.steps:
            x = (x - getattr(self, "pre%d_sub" % k)) / getattr(self, "pre%d_div" % k)
        return self.net(x)


def from_model(model_json, dtype=_torch.float64):
    """An ``nn.Module`` (:class:`FedgridModule`, in eval mode) holding a
    trained model's weights. ``model_json``: a path, JSON text, a dict or a
    :class:`fedgrid.Model`. Its ``net`` is an ``nn.Sequential`` for plans
    written by :func:`to_plan`. ``dtype`` float64 (the default) reproduces
    ``fedgrid model eval``; float32 is PyTorch's usual precision."""
    m = load_model(model_json)
    mod = FedgridModule(m, dtype)
    mod.eval()
    return mod
