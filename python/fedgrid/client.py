"""The data scientist's client: it drives the ``fedgrid`` binary with ``--json``."""

import json
import os
import sys
import tempfile
import time

from ._cli import FedgridError, find_binary, run
from .model import Model, load_model

try:  # optional
    import pandas as _pd
except ImportError:  # pragma: no cover
    _pd = None

try:  # optional: tqdm; its notebook widget only when ipywidgets is there too
    try:
        import ipywidgets  # noqa: F401
        from tqdm.auto import tqdm as _tqdm
    except ImportError:
        from tqdm import tqdm as _tqdm
except ImportError:  # pragma: no cover
    _tqdm = None

__all__ = ["Client", "Dataset", "Job", "connect"]

_ENDED = ("succeeded", "failed", "cancelled", "expired", "denied")
# A job on review-gated (private) data reads under_review to its requester
# from submission until a compliance officer decides; waiting stops there.
_UNDER_REVIEW = "under_review"


def connect(bootstrap=None, key=None, network=None, psk_file=None, binary=None, timeout=120):
    """Connect to a fedgrid network as a data scientist.

    ``bootstrap`` is the network peer's multiaddr (``/ip4/.../p2p/...``) or a
    list of them, ``key`` your key file (``fedgrid keygen``), ``network`` the
    network's name, ``psk_file`` its private-network key if it has one. Each
    left out falls back to the CLI's ``FEDGRID_BOOTSTRAP``, ``FEDGRID_KEY``,
    ``FEDGRID_NETWORK``, ``FEDGRID_PSK_FILE`` environment variables. The
    binary is ``binary``, else ``$FEDGRID_BIN``, else ``fedgrid`` on PATH.
    ``timeout`` bounds each command, in seconds.

    Nothing is contacted until the first call; errors of the CLI are raised
    as :class:`fedgrid.FedgridError` with its message and exit code.
    """
    return Client(bootstrap=bootstrap, key=key, network=network, psk_file=psk_file, binary=binary, timeout=timeout)


class Client:
    """A connection to a fedgrid network; see :func:`connect`."""

    def __init__(self, bootstrap=None, key=None, network=None, psk_file=None, binary=None, timeout=120):
        if isinstance(bootstrap, str):
            bootstrap = [bootstrap]
        self.bootstrap = list(bootstrap or [])
        self.key = key
        self.network = network
        self.psk_file = psk_file
        self.binary = find_binary(binary)
        self.timeout = timeout
        self._submitted = []  # job refs this client submitted
        self._gateways = []  # gateways seen in search results
        self._help = {}

    def __repr__(self):
        return "<fedgrid.Client network=%s bootstrap=%s>" % (self.network or "default", ",".join(self.bootstrap) or "$FEDGRID_BOOTSTRAP")

    # ---- running the CLI ----------------------------------------------------

    def _peer_flags(self, with_key=True):
        flags = []
        for b in self.bootstrap:
            flags += ["--bootstrap", b]
        if self.network:
            flags += ["--network", self.network]
        if self.psk_file:
            flags += ["--psk-file", self.psk_file]
        if with_key and self.key:
            flags += ["--key", self.key]
        return flags

    def run(self, *args, **kw):
        """Run ``fedgrid ARGS... --json`` with this client's peer flags and
        return the parsed JSON (a dict)."""
        with_key = kw.pop("with_key", True)
        timeout = kw.pop("timeout", self.timeout)
        if kw:
            raise TypeError("unexpected arguments %s" % ", ".join(kw))
        return run(self.binary, list(args) + self._peer_flags(with_key) + ["--json"], timeout=timeout)

    def _supports(self, command, text):
        """Whether ``fedgrid COMMAND --help`` mentions text (spaces between
        words of any width, as in its flag table)."""
        if command not in self._help:
            try:
                self._help[command] = run(self.binary, command.split() + ["--help"], parse_json=False, timeout=30)
            except FedgridError as e:
                self._help[command] = "" if "unknown command" in e.message else e.stderr
        return " ".join(text.split()) in " ".join(self._help[command].split())

    # ---- search ---------------------------------------------------------------

    def search(self, *tags, any=False, text=None, columns=None, limit=None, preview=True):
        """Datasets whose tags match (all of ``tags``, or any with
        ``any=True``), optionally with ``text`` in their name or description
        and the given ``columns``. Returns a list of :class:`Dataset`."""
        if len(tags) == 1 and isinstance(tags[0], (list, tuple)):
            tags = tuple(tags[0])
        args = ["search"] + list(tags)
        if any:
            args.append("--any")
        if text:
            args += ["--text", text]
        for c in columns or []:
            args += ["--column", c]
        if limit:
            args += ["--limit", str(limit)]
        if preview:
            args.append("--preview")
        doc = self.run(*args, with_key=False)
        out = [Dataset(self, r) for r in doc.get("results") or []]
        for d in out:
            if d.gateway not in self._gateways:
                self._gateways.append(d.gateway)
        return out

    # ---- training ---------------------------------------------------------

    def train(self, datasets, plan, wait=True, progress=True, timeout=None, poll=0.5):
        """Train ``plan`` on ``datasets`` (a :class:`Dataset`, a
        ``GATEWAY_PEER_ID/DATASET_ID`` reference, or a list of them).

        ``plan`` is a ``fedgrid.plan/v1`` dict (see :func:`fedgrid.torch.to_plan`),
        JSON text or a file path. With several datasets the training is
        federated across their gateways; this needs a fedgrid binary whose
        ``train`` takes ``--dataset`` more than once.

        With ``wait`` (the default) it follows the job until it ends, showing
        a progress bar (tqdm when installed, else a line on stderr, none with
        ``progress=False``), and raises :class:`FedgridError` if it did not
        succeed; ``timeout`` bounds the wait in seconds. Returns the :class:`Job`.
        """
        if isinstance(datasets, (str, Dataset)):
            datasets = [datasets]
        refs = [d.ref if isinstance(d, Dataset) else str(d) for d in datasets]
        if not refs:
            raise ValueError("train: no dataset given")
        if len(refs) > 1 and not self._supports("train", "--dataset stringArray"):
            raise FedgridError("federated training across %d datasets needs a fedgrid binary whose train takes --dataset more than once; %s does not (train on one dataset, or update fedgrid)" % (len(refs), self.binary))
        tmp = None
        if isinstance(plan, dict):
            fd, tmp = tempfile.mkstemp(prefix="fedgrid-plan-", suffix=".json")
            with os.fdopen(fd, "w") as f:
                json.dump(plan, f)
            plan_path = tmp
        elif isinstance(plan, str) and plan.lstrip().startswith("{"):
            fd, tmp = tempfile.mkstemp(prefix="fedgrid-plan-", suffix=".json")
            with os.fdopen(fd, "w") as f:
                f.write(plan)
            plan_path = tmp
        else:
            plan_path = str(plan)
        try:
            args = ["train", "--plan", plan_path]
            for r in refs:
                args += ["--dataset", r]
            doc = self.run(*args)
        finally:
            if tmp:
                os.unlink(tmp)
        job = Job(self, doc)
        self._submitted.append(job.ref)
        if wait:
            job.wait(progress=progress, timeout=timeout, poll=poll)
            if job.state not in ("succeeded", _UNDER_REVIEW):
                raise FedgridError("job %s ended %s: %s" % (job.ref, job.state, job.error or "no reason given"))
        return job

    def job(self, ref):
        """The :class:`Job` with reference ``GATEWAY_PEER_ID/JOB_ID``, as it is now."""
        return Job(self, self.run("job", ref))

    def jobs(self, state=None):
        """Your jobs, newest first, optionally only those in ``state``.

        With a binary that has ``fedgrid jobs`` these are your jobs on every
        gateway that knows your key; with one that lacks it (fedgrid before
        that command), the jobs this client submitted, as they are now."""
        if self._supports("jobs", "--json"):
            args = ["jobs"] + (["--state", state] if state else [])
            doc = self.run(*args)
            items = []
            for g in doc.get("gateways") or []:  # {"gateways": [{"gateway", "jobs": [...], "error"}]}
                for j in g.get("jobs") or []:
                    j.setdefault("gateway", g.get("gateway"))
                    items.append(j)
            items.extend(doc.get("jobs") or [])
            return [Job(self, j) for j in items]
        jobs = [self.job(r) for r in reversed(self._submitted)]
        return [j for j in jobs if state is None or j.state == state]

    # ---- privacy ----------------------------------------------------------

    def query(self, dataset, column, stat, epsilon, lower=None, upper=None, bins=None, mechanism=None, delta=None):
        """A differentially private statistic (``count``, ``sum``, ``mean`` or
        ``histogram``) of a numeric column; ``epsilon`` is charged to your
        budget at the dataset's gateway. Returns the CLI's JSON answer."""
        ref = dataset.ref if isinstance(dataset, Dataset) else str(dataset)
        args = ["query", "--dataset", ref, "--column", column, "--stat", stat, "--epsilon", repr(float(epsilon))]
        for flag, v in (("--lower", lower), ("--upper", upper), ("--bins", bins), ("--mechanism", mechanism), ("--delta", delta)):
            if v is not None:
                args += [flag, str(v)]
        return self.run(*args)

    def _gateway(self, gateway):
        if isinstance(gateway, Dataset):
            return gateway.gateway
        if gateway:
            return str(gateway).split("/")[0]
        raise ValueError("name the gateway (a peer ID, a dataset reference or a Dataset)")

    def requests(self, gateway=None, state=None):
        """Your requests to a gateway's compliance officers (all gateways
        seen in searches when ``gateway`` is left out), as a list of dicts."""
        gws = [self._gateway(gateway)] if gateway else list(self._gateways)
        if not gws:
            raise ValueError("requests: name a gateway, or search first so that the client knows some")
        out = []
        for g in gws:
            args = ["request", "--gateway", g, "list"]
            if state:
                args += ["--state", state]
            for r in self.run(*args).get("requests") or []:
                r.setdefault("gateway", g)
                out.append(r)
        return out

    def request_budget(self, gateway, epsilon, reason):
        """Ask a gateway's compliance officers for ``epsilon`` more privacy
        budget; returns the pending request."""
        return self.run("request", "--gateway", self._gateway(gateway), "budget", "--epsilon", repr(float(epsilon)), "--reason", reason)

    def request_permission(self, dataset, permission, reason):
        """Ask for a permission (``train`` or ``auto_release``) on a dataset."""
        ref = dataset.ref if isinstance(dataset, Dataset) else str(dataset)
        return self.run("request", "--gateway", self._gateway(ref), "permission", "--dataset", ref, "--permission", permission, "--reason", reason)

    # ---- models -------------------------------------------------------------

    def evaluate(self, model, csv_path):
        """``fedgrid model eval``: the model's loss, accuracy and AUC on a
        labelled CSV, computed by the binary."""
        model = load_model(model)
        if model.path is None:
            fd, path = tempfile.mkstemp(prefix="fedgrid-model-", suffix=".json")
            os.close(fd)
            model.save(path)
        return run(self.binary, ["model", "eval", "--model", model.path, "--data", str(csv_path), "--json"], timeout=self.timeout)


class Dataset:
    """A dataset found by :meth:`Client.search`: ``ref`` (what ``train`` takes),
    ``gateway``, ``gateway_name``, ``id``, ``name``, ``description``, ``tags``,
    ``rows``, ``columns`` (list of ``{name, type}``) and ``schema`` (name -> type)."""

    def __init__(self, client, doc):
        self.client = client
        self.doc = doc
        d = doc.get("dataset") or {}
        self.gateway = doc.get("gateway")
        self.gateway_name = doc.get("gateway_name")
        self.id = d.get("id")
        self.ref = doc.get("ref") or "%s/%s" % (self.gateway, self.id)
        self.name = d.get("name")
        self.description = d.get("description")
        self.tags = list(d.get("tags") or [])
        self.rows = d.get("rows")
        self.columns = list(d.get("columns") or [])
        self.visibility = d.get("visibility")
        self._preview = d.get("preview")

    @property
    def schema(self):
        return {c["name"]: c["type"] for c in self.columns}

    def __repr__(self):
        return "<fedgrid.Dataset %s at %s: %s rows, %d columns>" % (self.name, self.gateway_name or self.gateway, self.rows, len(self.columns))

    def preview(self):
        """The gateway's synthetic preview rows (never real rows): a pandas
        DataFrame when pandas is installed, else a list of dicts. Numbers are
        numbers, text stays text."""
        pv = self._preview
        if pv is None:
            for d in self.client.search(text=self.name, preview=True):
                if d.ref == self.ref:
                    pv = self._preview = d._preview
        if not pv:
            raise FedgridError("gateway %s gave no preview of %s" % (self.gateway_name or self.gateway, self.name))
        types = self.schema
        cols = pv.get("columns") or []

        def cell(name, v):
            if types.get(name) == "number":
                try:
                    return float(v)
                except (TypeError, ValueError):
                    return v
            return v

        rows = [{c: cell(c, v) for c, v in zip(cols, r)} for r in pv.get("rows") or []]
        if _pd is not None:
            return _pd.DataFrame(rows, columns=cols)
        return rows


class Job:
    """A training job: ``ref``, ``state``, ``progress`` (epoch, epochs, loss),
    ``metrics`` (when it ended), ``error``."""

    def __init__(self, client, doc):
        self.client = client
        self._set(doc)

    def _set(self, doc):
        self.doc = doc
        self.ref = doc.get("ref") or "%s/%s" % (doc.get("gateway"), doc.get("id"))
        self.id = doc.get("id")
        self.gateway = doc.get("gateway")
        self.dataset = doc.get("dataset")
        self.state = doc.get("state")
        self.progress = doc.get("progress") or {}
        self.metrics = doc.get("metrics") or {}
        self.error = doc.get("error")

    def __repr__(self):
        return "<fedgrid.Job %s %s>" % (self.ref, self.state)

    @property
    def done(self):
        return self.state in _ENDED

    @property
    def succeeded(self):
        return self.state == "succeeded"

    def refresh(self):
        """Ask the gateway for the job's state now."""
        self._set(self.client.run("job", self.ref))
        return self

    def wait(self, progress=True, timeout=None, poll=0.5):
        """Follow the job until it ends, or is under review (on review-gated
        data its outcome shows once an officer releases it), or ``timeout``
        seconds pass (then FedgridError), with a progress bar over its epochs
        or rounds."""
        deadline = None if timeout is None else time.monotonic() + timeout
        bar = None
        last = None
        try:
            while True:
                if not self.done:
                    self.refresh()
                p = self.progress
                epoch, epochs = p.get("epoch") or 0, p.get("epochs") or 0
                if progress and epochs:
                    if _tqdm is not None:
                        if bar is None:
                            bar = _tqdm(total=epochs, desc=self.ref.split("/")[-1], unit="epoch")
                        bar.n = epoch
                        bar.set_postfix(state=self.state, loss="%.4f" % (p.get("loss") or 0))
                        bar.refresh()
                    elif (epoch, epochs, self.state) != last:
                        sys.stderr.write("\rjob %s %s: epoch %d/%d loss %.4f " % (self.ref.split("/")[-1], self.state, epoch, epochs, p.get("loss") or 0))
                        sys.stderr.flush()
                        last = (epoch, epochs, self.state)
                if self.done or self.state == _UNDER_REVIEW:
                    break
                if deadline is not None and time.monotonic() > deadline:
                    raise FedgridError("job %s is still %s after %s seconds" % (self.ref, self.state, timeout))
                time.sleep(poll)  # polling the gateway; the CLI has no push for jobs
        finally:
            if bar is not None:
                bar.close()
            elif last is not None:
                sys.stderr.write("\n")
        return self

    def result(self, path=None):
        """The released model (``fedgrid result``), as a :class:`fedgrid.Model`;
        also written to ``path`` when given."""
        if path is not None:
            self.client.run("result", self.ref, "--out", str(path))
            return load_model(str(path))
        fd, tmp = tempfile.mkstemp(prefix="fedgrid-result-", suffix=".json")
        os.close(fd)
        try:
            self.client.run("result", self.ref, "--out", tmp)
            m = load_model(tmp)
        finally:
            os.unlink(tmp)
        m.path = None
        return m
