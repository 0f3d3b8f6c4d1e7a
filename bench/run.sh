#!/usr/bin/env bash
# make bench: fedgrid training speed against PyTorch on the same CSV, models, epochs and batch size,
# then the scikit-learn accuracy check. Installs python3-torch / python3-sklearn (Debian) when missing.
# Env: EPOCHS (default "1,3": marginal seconds per epoch = (t3 - t1) / 2), REPEAT (default 3),
#      MODELS (default "logreg mlp64 mlp256"), WORK (default a temp dir).
set -euo pipefail
cd "$(dirname "$0")/.."
EPOCHS=${EPOCHS:-1,3}
REPEAT=${REPEAT:-3}
MODELS=${MODELS:-logreg mlp64 mlp256}
WORK=${WORK:-$(mktemp -d)}
PY=/usr/bin/python3

if ! $PY -c 'import torch, sklearn' 2>/dev/null; then
  echo "installing python3-torch python3-sklearn (apt)" >&2
  apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y python3-torch python3-sklearn
fi

echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), go $(go env GOVERSION), torch $($PY -c 'import torch; print(torch.__version__)')"
go build -o "$WORK/trainbench" ./bench/trainbench
[ -f "$WORK/bench.csv" ] || "$WORK/trainbench" gen -out "$WORK/bench.csv"

first=${EPOCHS%%,*}; last=${EPOCHS##*,}
# fastest of REPEAT runs per epoch count
best() { sort -k3 -g | head -1; }
declare -A GO TORCH
for m in $MODELS; do
  for e in $first $last; do
    t=$(for r in $(seq "$REPEAT"); do "$WORK/trainbench" train -data "$WORK/bench.csv" -model "$m" -epochs "$e"; done | best | awk '{print $3}')
    GO[$m,$e]=$t
  done
  tb=""
  for th in 1 2; do
    out=$($PY bench/torch_bench.py "$WORK/bench.csv" "$th" "$first,$last" "$m" "$REPEAT")
    a=$(echo "$out" | awk -v e="$first" '$2==e {print $3}'); b=$(echo "$out" | awk -v e="$last" '$2==e {print $3}')
    per=$(awk -v a="$a" -v b="$b" -v d="$((last-first))" 'BEGIN{printf "%.4f", (b-a)/d}')
    echo "torch $m threads=$th: ${first}ep ${a}s, ${last}ep ${b}s, marginal ${per}s/epoch"
    if [ -z "$tb" ] || awk -v x="$per" -v y="$tb" 'BEGIN{exit !(x<y)}'; then tb=$per; tth=$th; fi
  done
  gper=$(awk -v a="${GO[$m,$first]}" -v b="${GO[$m,$last]}" -v d="$((last-first))" 'BEGIN{printf "%.4f", (b-a)/d}')
  echo "fedgrid $m: ${first}ep ${GO[$m,$first]}s, ${last}ep ${GO[$m,$last]}s, marginal ${gper}s/epoch"
  awk -v m="$m" -v g="$gper" -v t="$tb" -v th="$tth" 'BEGIN{printf "RESULT %s fedgrid %.4f s/epoch, torch (%d threads) %.4f s/epoch, ratio %.2f\n", m, g, th, t, g/t}'
done

./bench/sklearn_check.sh
