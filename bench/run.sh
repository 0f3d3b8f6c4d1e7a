#!/usr/bin/env bash
# make bench: fedgrid training speed against PyTorch on the same CSV, models, epochs and batch size,
# then the scikit-learn accuracy check. Installs python3-torch / python3-sklearn (Debian) when missing.
# Env: EPOCHS (default "1,3": marginal seconds per epoch = (t3 - t1) / 2), REPEAT (default 5 rounds),
#      MODELS (default "logreg mlp64 mlp256"), THREADS (torch thread counts tried, default "1 2"),
#      WORK (default a temp dir), SKLEARN (default 1: run the scikit-learn check too).
# The machine may be shared: each round times fedgrid, then torch at every thread count, back to
# back, so both sides see the same load; each (side, model, epochs) keeps its fastest round.
set -euo pipefail
cd "$(dirname "$0")/.."
EPOCHS=${EPOCHS:-1,3}
REPEAT=${REPEAT:-5}
MODELS=${MODELS:-logreg mlp64 mlp256}
THREADS=${THREADS:-1 2}
WORK=${WORK:-$(mktemp -d)}
SKLEARN=${SKLEARN:-1}
PY=/usr/bin/python3

if ! $PY -c 'import torch, sklearn' 2>/dev/null; then
  echo "installing python3-torch python3-sklearn (apt)" >&2
  apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y python3-torch python3-sklearn
fi

echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), go $(go env GOVERSION), torch $($PY -c 'import torch; print(torch.__version__)')"
go build -o "$WORK/trainbench" ./bench/trainbench
[ -f "$WORK/bench.csv" ] || "$WORK/trainbench" gen -out "$WORK/bench.csv"

first=${EPOCHS%%,*}; last=${EPOCHS##*,}
raw="$WORK/raw.txt"; : > "$raw"
# Lines of raw.txt: side model epochs seconds (side = fedgrid or torchN).
for r in $(seq "$REPEAT"); do
  for m in $MODELS; do
    "$WORK/trainbench" train -data "$WORK/bench.csv" -model "$m" -epochs "$first,$last" | awk '{print "fedgrid", $1, $2, $3}' >> "$raw"
    for th in $THREADS; do
      $PY bench/torch_bench.py "$WORK/bench.csv" "$th" "$first,$last" "$m" 1 | awk -v s="torch$th" '{print s, $1, $2, $3}' >> "$raw"
    done
  done
  echo "round $r done" >&2
done

best() { awk -v s="$1" -v m="$2" -v e="$3" '$1==s && $2==m && $3==e {print $4}' "$raw" | sort -g | head -1; }
marg() { awk -v a="$1" -v b="$2" -v d="$((last-first))" 'BEGIN{printf "%.4f", (b-a)/d}'; }
for m in $MODELS; do
  tb=""
  for th in $THREADS; do
    a=$(best "torch$th" "$m" "$first"); b=$(best "torch$th" "$m" "$last"); per=$(marg "$a" "$b")
    echo "torch $m threads=$th: ${first}ep ${a}s, ${last}ep ${b}s, marginal ${per}s/epoch"
    if [ -z "$tb" ] || awk -v x="$per" -v y="$tb" 'BEGIN{exit !(x<y)}'; then tb=$per; tth=$th; fi
  done
  a=$(best fedgrid "$m" "$first"); b=$(best fedgrid "$m" "$last"); gper=$(marg "$a" "$b")
  echo "fedgrid $m: ${first}ep ${a}s, ${last}ep ${b}s, marginal ${gper}s/epoch"
  awk -v m="$m" -v g="$gper" -v t="$tb" -v th="$tth" 'BEGIN{printf "RESULT %s fedgrid %.4f s/epoch, torch (%d threads) %.4f s/epoch, ratio %.2f\n", m, g, th, t, g/t}'
done
echo "raw timings: $raw"

if [ "$SKLEARN" = 1 ]; then ./bench/sklearn_check.sh; fi
