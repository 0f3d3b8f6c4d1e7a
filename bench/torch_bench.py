# PyTorch side of `make bench`: the same CSV, models, epochs and batch size as
# bench/trainbench. Usage: /usr/bin/python3 torch_bench.py CSV THREADS EPOCHS,EPOCHS...
# Prints "model epochs seconds loss" per epoch count: the fastest of REPEAT runs (default 3),
# after one discarded warm-up epoch; seconds cover the training loop only.
# Same loop as ../shared/bench/torch_reference.py: SGD, BCEWithLogitsLoss,
# batches of 256 in file order, the partial last batch dropped.
import sys, time
import numpy as np
import torch

path, threads, epochs = sys.argv[1], int(sys.argv[2]), [int(e) for e in sys.argv[3].split(',')]
models = sys.argv[4].split(',') if len(sys.argv) > 4 else ['logreg', 'mlp64', 'mlp256']
repeat = int(sys.argv[5]) if len(sys.argv) > 5 else 3
torch.set_num_threads(threads)
torch.manual_seed(0)
data = np.loadtxt(path, delimiter=',', skiprows=1, dtype=np.float32)
X, y = torch.from_numpy(np.ascontiguousarray(data[:, :-1])), torch.from_numpy(np.ascontiguousarray(data[:, -1]))
N, D = X.shape

def make(name):
    if name == 'logreg':
        return torch.nn.Linear(D, 1), 0.5
    if name == 'mlp64':
        return torch.nn.Sequential(torch.nn.Linear(D, 64), torch.nn.ReLU(), torch.nn.Linear(64, 1)), 0.1
    return torch.nn.Sequential(torch.nn.Linear(D, 256), torch.nn.ReLU(), torch.nn.Linear(256, 256), torch.nn.ReLU(),
                               torch.nn.Linear(256, 1)), 0.05

def run(name, ep, bs=256):
    model, lr = make(name)
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    lossf = torch.nn.BCEWithLogitsLoss()
    t = time.perf_counter()
    for _ in range(ep):
        for i in range(0, N - bs + 1, bs):
            xb, yb = X[i:i+bs], y[i:i+bs]
            opt.zero_grad(); loss = lossf(model(xb).squeeze(1), yb); loss.backward(); opt.step()
    return time.perf_counter() - t, loss.item()

for name in models:
    run(name, 1)
    for ep in epochs:
        s, l = min(run(name, ep) for _ in range(repeat))
        print('%s %d %.4f loss=%.4f' % (name, ep, s, l), flush=True)
