"""The data scientist's client: it drives the ``fedgrid`` binary with ``--json``."""

import json
import os
import subprocess
import sys
import tempfile
import time

from ._cli import FedgridError, _message, find_binary, run
from .model import load_model

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

__all__ = ["Client", "Dataset", "FederatedJob", "Job", "connect"]

_ENDED = ("succeeded", "failed", "cancelled", "expired", "denied")
# A job on review-gated (private) data reads under_review to its requester
# from submission until a compliance officer decides; waiting stops there.
_UNDER_REVIEW = "under_review"


def connect(bootstrap=None, key=None, network=None, psk_file=None, binary=None, timeout=120, federations=None):
    """Connect to a fedgrid network as a data scientist.

    ``bootstrap`` is the network peer's multiaddr (``/ip4/.../p2p/...``) or a
    list of them, ``key`` your key file (``fedgrid keygen``), ``network`` the
    network's name, ``psk_file`` its private-network key if it has one. Each
    left out falls back to the CLI's ``FEDGRID_BOOTSTRAP``, ``FEDGRID_KEY``,
    ``FEDGRID_NETWORK``, ``FEDGRID_PSK_FILE`` environment variables. The
    binary is ``binary``, else ``$FEDGRID_BIN``, else ``fedgrid`` on PATH.
    ``timeout`` bounds each command, in seconds. ``federations`` is where the
    CLI keeps the state of federations this client coordinates (default: a
    new temporary directory; give one to find them again in a later session).

    Nothing is contacted until the first call; errors of the CLI are raised
    as :class:`fedgrid.FedgridError` with its message and exit code.
    """
    return Client(bootstrap=bootstrap, key=key, network=network, psk_file=psk_file, binary=binary, timeout=timeout, federations=federations)


class Client:
    """A connection to a fedgrid network; see :func:`connect`."""

    def __init__(self, bootstrap=None, key=None, network=None, psk_file=None, binary=None, timeout=120, federations=None):
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
        self.federations = federations

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

    def train(self, datasets, plan, wait=True, progress=True, timeout=None, poll=0.5, rounds=None, strategy=None, min_gateways=None):
        """Train ``plan`` on ``datasets`` (a :class:`Dataset`, a
        ``GATEWAY_PEER_ID/DATASET_ID`` reference, or a list of them).

        ``plan`` is a ``fedgrid.plan/v1`` dict (see :func:`fedgrid.torch.to_plan`),
        JSON text or a file path. With several datasets (of one schema) the
        training is federated across their gateways, ``rounds`` rounds (default
        the plan's ``train.rounds``) with ``strategy`` (fedavg, fedprox or
        fedavgm) and at least ``min_gateways`` per round; this client's
        ``fedgrid`` process coordinates it. Preprocessing statistics the plan
        does not declare are fitted across the gateways in a round 0 (binaries
        before that refuse such plans). It needs a fedgrid binary whose ``train``
        takes ``--dataset`` more than once; the job is then a
        :class:`FederatedJob` (reference ``fed:ID``).

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
        if len(refs) > 1 and not self.can_federate():
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
            if len(refs) > 1:
                for flag, v in (("--rounds", rounds), ("--strategy", strategy), ("--min-gateways", min_gateways)):
                    if v is not None:
                        args += [flag, str(v)]
                job = FederatedJob(self, args, plan_file=tmp)  # owns the temporary plan file from here
                tmp = None
            else:
                job = Job(self, self.run(*args))
        finally:
            if tmp:
                os.unlink(tmp)
        self._submitted.append(job.ref)
        if wait:
            job.wait(progress=progress, timeout=timeout, poll=poll)
            if job.state not in ("succeeded", _UNDER_REVIEW):
                raise FedgridError("job %s ended %s: %s" % (job.ref, job.state, job.error or "no reason given"))
        return job

    def can_federate(self):
        """Whether the fedgrid binary trains across several datasets' gateways
        (its ``train`` takes ``--dataset`` more than once)."""
        return self._supports("train", "--dataset stringArray")

    def job(self, ref):
        """The :class:`Job` with reference ``GATEWAY_PEER_ID/JOB_ID`` (or
        ``fed:ID``, a federation this client ran), as it is now."""
        if str(ref).startswith("fed:"):
            return FederatedJob(self, None, ref=ref)
        return Job(self, self.run("job", ref))

    def _federations(self):
        if self.federations is None:
            self.federations = tempfile.mkdtemp(prefix="fedgrid-federations-")
        os.makedirs(self.federations, exist_ok=True)
        return self.federations

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

    def can_evaluate_federated(self):
        """Whether the fedgrid binary scores models across gateways (``fedgrid eval``)."""
        return self._supports("eval", "--model string")

    def evaluate_federated(self, model, datasets, min_gateways=None, timeout=None):
        """``fedgrid eval``: score ``model`` (a :class:`Model`, a dict or a
        path) on the rows of ``datasets`` (two or more :class:`Dataset` or
        references, on different gateways). Each gateway applies its rules
        (permission, the model against its schema, its officer's approval on
        review-gated data) and only secure sums over all of them leave.
        Returns a dict: ``rows``, ``task``, ``loss``, ``accuracy`` and
        ``correct`` (classification), ``auc`` with ``auc_error`` (binary: from
        score histograms of ``bins`` bins, within ``auc_error`` of the exact
        AUC), ``gateways`` whose rows are in the figures, ``refused``.
        A refusal raises :class:`FedgridError` with the gateways' reasons.
        """
        if isinstance(datasets, (str, Dataset)):
            datasets = [datasets]
        refs = [d.ref if isinstance(d, Dataset) else str(d) for d in datasets]
        if len(refs) < 2:
            raise ValueError("evaluate_federated: give datasets on at least two gateways (for a CSV of your own: evaluate)")
        if not self.can_evaluate_federated():
            raise FedgridError("federated evaluation needs a fedgrid binary with the eval command; %s has none (update fedgrid)" % self.binary)
        model = load_model(model)
        tmp = None
        if model.path is None:
            fd, tmp = tempfile.mkstemp(prefix="fedgrid-model-", suffix=".json")
            os.close(fd)
            model.save(tmp)
        try:
            args = ["eval", "--model", model.path or tmp]
            for r in refs:
                args += ["--dataset", r]
            if min_gateways is not None:
                args += ["--min-gateways", str(min_gateways)]
            return self.run(*args, timeout=timeout or self.timeout)
        finally:
            if tmp:
                os.unlink(tmp)


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
                            unit = "round" if isinstance(self, FederatedJob) else "epoch"
                            bar = _tqdm(total=epochs, desc=(self.ref or "federation").split("/")[-1], unit=unit)
                        bar.n = epoch
                        bar.set_postfix(state=self.state, loss="%.4f" % (p.get("loss") or 0))
                        bar.refresh()
                    elif (epoch, epochs, self.state) != last:
                        sys.stderr.write("\rjob %s %s: epoch %d/%d loss %.4f " % ((self.ref or "federation").split("/")[-1], self.state, epoch, epochs, p.get("loss") or 0))
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


class FederatedJob(Job):
    """A federation across several gateways, coordinated by a ``fedgrid train``
    process this client runs (reference ``fed:ID``). ``progress`` counts
    rounds: ``epoch`` is the rounds completed, ``epochs`` the rounds asked for.
    ``history`` has each round's gateways, rows and loss."""

    def __init__(self, client, args, ref=None, plan_file=None):
        self.client = client
        self.proc = None
        self.exit_code = None
        self._plan_file = plan_file
        self._fed_dir = client._federations()
        self._set({"federation": ref, "state": "running" if ref is None else None})
        if ref is not None:
            self.refresh()
            return
        self._before = set(os.listdir(self._fed_dir))
        self._out = tempfile.TemporaryFile()
        self._err = tempfile.TemporaryFile()
        self._cmd = [client.binary] + [str(a) for a in args] + ["--federations", self._fed_dir] + client._peer_flags() + ["--json"]
        # The coordinator runs as long as the federation; refresh() and wait() reap it.
        self.proc = subprocess.Popen(self._cmd, stdout=self._out, stderr=self._err, stdin=subprocess.DEVNULL)

    def _set(self, doc):
        self.doc = doc
        self.ref = doc.get("federation") or doc.get("ref")
        self.id = self.ref
        self.gateway = None
        self.dataset = [p.get("dataset") for p in doc.get("participants") or []]
        self.state = doc.get("state")
        self.history = doc.get("history") or []
        last = self.history[-1] if self.history else {}
        self.progress = {"epoch": doc.get("completed_rounds") or 0, "epochs": doc.get("rounds") or 0, "loss": last.get("loss") or 0}
        self.metrics = {"rounds": doc.get("completed_rounds"), "train_loss": [h.get("loss") for h in self.history]}
        self.error = doc.get("error") or None

    def __repr__(self):
        return "<fedgrid.FederatedJob %s %s>" % (self.ref or "(starting)", self.state)

    @property
    def done(self):
        return self.proc is None and self.state in _ENDED

    def refresh(self):
        """The federation's state now (from its coordinator's state file)."""
        if self.proc is not None and self.proc.poll() is not None:
            return self._finish()
        if self.ref is None:
            new = sorted(n for n in set(os.listdir(self._fed_dir)) - self._before if n.endswith(".json"))
            if not new:
                return self
            self.ref = "fed:" + new[0][:-len(".json")]
        doc = self.client.run("job", self.ref, "--federations", self._fed_dir)
        if self.proc is not None and doc.get("state") in _ENDED:
            doc["state"] = "running"  # the coordinator is still finishing
        self._set(doc)
        return self

    def _finish(self):
        """The coordinator exited: its JSON answer, or its error."""
        code = self.proc.returncode
        self.proc = None
        if self._plan_file:
            os.unlink(self._plan_file)
            self._plan_file = None
        self._out.seek(0)
        self._err.seek(0)
        out = self._out.read().decode("utf-8", "replace")
        err = self._err.read().decode("utf-8", "replace")
        self._out.close()
        self._err.close()
        doc = None
        try:
            doc = json.loads(out) if out.strip() else None
        except ValueError:
            pass
        if doc is not None:
            self._set(doc)
        self.exit_code = code
        if code != 0:
            self.error = _message(err, code)
            if self.state not in _ENDED:
                self.state = "failed"
            if doc is None:  # refused before it started: as any command's error
                raise FedgridError(self.error, code, self._cmd, err)
        return self

    def result(self, path=None):
        """The federation's model, as a gateway released it (``fedgrid result fed:ID``)."""
        if path is not None:
            self.client.run("result", self.ref, "--out", str(path), "--federations", self._fed_dir)
            return load_model(str(path))
        fd, tmp = tempfile.mkstemp(prefix="fedgrid-result-", suffix=".json")
        os.close(fd)
        try:
            self.client.run("result", self.ref, "--out", tmp, "--federations", self._fed_dir)
            m = load_model(tmp)
        finally:
            os.unlink(tmp)
        m.path = None
        return m
