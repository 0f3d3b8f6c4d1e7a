# Central scikit-learn reference for the accuracy check (bench/sklearn_check.sh):
# StandardScaler + LogisticRegression (defaults: L2, C=1, lbfgs) fitted on TRAIN.csv,
# accuracy on HOLDOUT.csv. Usage: /usr/bin/python3 sklearn_ref.py TRAIN.csv HOLDOUT.csv LABEL
import sys
import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

def load(path, label):
    with open(path) as f:
        header = f.readline().strip().split(',')
    data = np.loadtxt(path, delimiter=',', skiprows=1)
    j = header.index(label)
    return np.delete(data, j, axis=1), data[:, j]

xtr, ytr = load(sys.argv[1], sys.argv[3])
xho, yho = load(sys.argv[2], sys.argv[3])
model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000)).fit(xtr, ytr)
print('%.6f' % model.score(xho, yho))
