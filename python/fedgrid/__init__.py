"""fedgrid: train models on data you cannot see, from Python.

The client drives the ``fedgrid`` binary (``--json``): ::

    import fedgrid
    fg = fedgrid.connect(bootstrap="/ip4/127.0.0.1/tcp/4001/p2p/12D3KooW...", key="scientist.key")
    ds = fg.search("medical")[0]
    ds.preview()                          # synthetic rows, as a DataFrame when pandas is installed
    job = fg.train(ds, plan, wait=True)   # plan: a fedgrid.plan/v1 dict, e.g. from fedgrid.torch.to_plan
    model = job.result()                  # a fedgrid.Model
    model.predict(rows)

``fedgrid.torch`` turns a PyTorch ``nn.Sequential`` into a plan and a trained
model back into an ``nn.Module`` (needs torch). The core needs the standard
library only; numpy, pandas, torch and tqdm are used when installed.
"""

from ._cli import FedgridError, find_binary
from .client import Client, Dataset, FederatedJob, Job, connect
from .model import Model, load_model, roc_auc, roc_curve

__version__ = "0.1.0"

__all__ = ["Client", "Dataset", "FedgridError", "FederatedJob", "Job", "Model", "connect", "find_binary", "load_model", "roc_auc", "roc_curve"]
