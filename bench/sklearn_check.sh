#!/usr/bin/env bash
# Held-out accuracy of fedgrid's logistic regression against scikit-learn's on the same splits
# (acceptance 2 of issue 4). Needs /usr/bin/python3 with sklearn (bench/run.sh installs it).
set -euo pipefail
cd "$(dirname "$0")/.."
FEDGRID_SKLEARN=1 go test ./plan -run TestSklearnReference -count=1 -v 2>&1 | grep -E 'sklearn|PASS|FAIL|ok'
