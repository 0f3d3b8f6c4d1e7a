#!/usr/bin/env bash
# Checks the deployment files (CI runs it through `make deploy-check`, as root):
#   image    build the image with podman (no container is ever run), export its
#            filesystem, check it holds only the binary, CA certificates and the
#            user, and run `fedgrid version` from it with chroot
#   systemd  systemd-analyze verify the units
#   helm     helm lint + helm template + kubeconform (offline schemas, see
#            deploy/helm/README.md)
#   compose  the compose file parses and names only the image and known flags
# Usage: deploy/check.sh [image|systemd|helm|compose]...   (default: all)
set -euo pipefail
cd "$(dirname "$0")/.."
GO=${GO:-go}
HELM_VERSION=v3.22.0
KUBECONFORM_VERSION=v0.8.0
KUBECTL_SCHEMA_MODULE=k8s.io/kubectl@v0.37.0
work=$(mktemp -d /tmp/fedgrid-deploy-check.XXXXXX)
trap 'rm -rf "$work"' EXIT

skip() { echo "deploy-check: SKIP $1: $2"; }

check_image() {
  if ! command -v podman >/dev/null; then skip image "podman is not installed (apt-get install podman)"; return; fi
  if [ "$(id -u)" != 0 ]; then skip image "chroot needs root"; return; fi
  make --no-print-directory image-context IMAGE_CONTEXT="$work/ctx" >/dev/null
  local tag="localhost/fedgrid:deploy-check-$$"
  podman build -q -f deploy/Containerfile -t "$tag" "$work/ctx" >/dev/null
  podman image save --format oci-dir -o "$work/oci" "$tag" >/dev/null
  local size
  size=$(podman image inspect "$tag" --format '{{.Size}}')
  podman rmi -f "$tag" >/dev/null
  # Unpack the layers in order (no container is created or run).
  mkdir -p "$work/root"
  python3 - "$work/oci" <<'PY' | while read -r layer; do tar -xzf "$work/oci/blobs/sha256/$layer" -C "$work/root"; done
import json, sys
d = sys.argv[1]
idx = json.load(open(d + "/index.json"))
m = json.load(open(d + "/blobs/sha256/" + idx["manifests"][0]["digest"].split(":")[1]))
for l in m["layers"]:
    print(l["digest"].split(":")[1])
PY
  local files
  files=$(cd "$work/root" && find . -mindepth 1 \( -type f -o -type l \) | sort | tr '\n' ' ')
  local want="./etc/group ./etc/passwd ./etc/ssl/certs/ca-certificates.crt ./usr/local/bin/fedgrid "
  if [ "$files" != "$want" ]; then
    echo "image filesystem holds: $files"; echo "want only:              $want"; exit 1
  fi
  if [ "$(stat -c %u:%g "$work/root/data")" != "65532:65532" ]; then
    echo "the data directory is not owned by the fedgrid user"; exit 1
  fi
  if ! "$GO" version -m "$work/root/usr/local/bin/fedgrid" | grep -q "CGO_ENABLED=0"; then
    echo "the binary was not built with CGO_ENABLED=0 (static)"; exit 1
  fi
  echo "image: $(numfmt --to=iec "$size") uncompressed, layers $(du -ch "$work"/oci/blobs/sha256/* | tail -1 | cut -f1) on disk (gzip, with config)"
  chroot --userspec=65532:65532 "$work/root" /usr/local/bin/fedgrid version
  # The non-root user can write its volume.
  chroot --userspec=65532:65532 "$work/root" /usr/local/bin/fedgrid keygen --out /data/check.key >/dev/null
  echo "image: ok (fedgrid version runs from the exported filesystem; /data is writable by uid 65532)"
}

check_systemd() {
  if ! command -v systemd-analyze >/dev/null; then skip systemd "systemd-analyze is not installed"; return; fi
  # Verify against a root holding the binary where the units expect it.
  mkdir -p "$work/sd/usr/local/bin" "$work/sd/etc/systemd/system" "$work/sd/usr/lib/systemd" "$work/sd/bin"
  cp -r /usr/lib/systemd/system "$work/sd/usr/lib/systemd/"   # sysinit.target and friends
  cp /bin/kill "$work/sd/bin/"                                  # ExecReload
  make --no-print-directory build BIN="$work/sd/usr/local/bin/fedgrid" >/dev/null
  cp deploy/systemd/*.service "$work/sd/etc/systemd/system/"
  local out
  if ! out=$(systemd-analyze verify --root="$work/sd" deploy/systemd/fedgrid-network.service deploy/systemd/fedgrid-gateway.service deploy/systemd/fedgrid-node.service 2>&1); then
    echo "$out"; exit 1
  fi
  if [ -n "$out" ]; then echo "systemd-analyze verify warned:"; echo "$out"; exit 1; fi
  # Hardening that must stay (systemd-analyze security --offline does not read
  # unit files in this container, so check the settings themselves).
  for u in deploy/systemd/*.service; do
    for want in User=fedgrid NoNewPrivileges=yes ProtectSystem=strict ProtectHome=yes PrivateTmp=yes \
        StateDirectory= CapabilityBoundingSet= RestrictAddressFamilies= SystemCallFilter=@system-service; do
      grep -q "^$want" "$u" || { echo "$u lacks $want"; exit 1; }
    done
  done
  echo "systemd: ok"
}

check_helm() {
  local chart=deploy/helm/fedgrid
  local helm=("$GO" run "helm.sh/helm/v3/cmd/helm@$HELM_VERSION")
  local kubeconform=("$GO" run "github.com/yannh/kubeconform/cmd/kubeconform@$KUBECONFORM_VERSION")
  "${helm[@]}" lint --strict "$chart"
  "${helm[@]}" lint --strict "$chart" -f deploy/helm/ci-values.yaml
  "${helm[@]}" template fg "$chart" > "$work/default.yaml"
  "${helm[@]}" template fg "$chart" -f deploy/helm/ci-values.yaml > "$work/all.yaml"
  # Offline schemas: Kubernetes' OpenAPI documents shipped in a Go module.
  local dir
  dir=$("$GO" mod download -json "$KUBECTL_SCHEMA_MODULE" | python3 -c 'import json,sys; print(json.load(sys.stdin)["Dir"])')
  "$GO" run ./deploy/helm/schemagen -kubectl "$dir" -out "$work/schemas"
  "${kubeconform[@]}" -strict -summary -schema-location "$work/schemas/{{.ResourceKind}}{{.KindSuffix}}.json" "$work/default.yaml" "$work/all.yaml"
  # The schemas do catch mistakes: a misspelt field and a wrong type fail.
  printf 'apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: x}\nspec:\n  replica: 1\n  selector: {matchLabels: {a: b}}\n  template: {metadata: {labels: {a: b}}, spec: {containers: [{name: c, image: i}]}}\n' > "$work/bad1.yaml"
  printf 'apiVersion: v1\nkind: Service\nmetadata: {name: x}\nspec: {ports: [{port: "eighty"}]}\n' > "$work/bad2.yaml"
  for bad in "$work/bad1.yaml" "$work/bad2.yaml"; do
    if "${kubeconform[@]}" -strict -schema-location "$work/schemas/{{.ResourceKind}}{{.KindSuffix}}.json" "$bad" >/dev/null 2>&1; then
      echo "kubeconform accepted an invalid manifest: $(cat "$bad")"; exit 1
    fi
  done
  # Every kind the chart renders must have been validated, not skipped.
  grep -h '^kind:' "$work/all.yaml" | sort | uniq -c
  echo "helm: ok"
}

check_compose() {
  # Parse it (YAML anchors and merges resolved) and check every service runs
  # a fedgrid peer command with flags fedgrid knows.
  local bin="$work/fedgrid-compose"
  make --no-print-directory build BIN="$bin" >/dev/null
  python3 - deploy/compose.yaml "$bin" <<'PY'
import subprocess, sys, yaml
doc = yaml.safe_load(open(sys.argv[1]))
svcs = doc["services"]
assert set(svcs) == {"network", "gateway-a", "gateway-b", "node-a", "node-b"}, sorted(svcs)
for name, s in svcs.items():
    assert s["image"].startswith("${FEDGRID_IMAGE"), name
    cmd = [str(c) for c in s["command"]]
    assert cmd[0] in ("network", "gateway", "node"), (name, cmd)
    flags = {c.split("=")[0] for c in cmd[1:] if c.startswith("--")}
    help_ = subprocess.run([sys.argv[2], cmd[0], "--help"], capture_output=True, text=True, check=True).stdout
    for f in flags:
        assert f in help_, (name, f, "is not a flag of fedgrid " + cmd[0])
    for k in s.get("environment", {}):
        assert k.startswith("FEDGRID_"), (name, k)
        flag = "--" + k[len("FEDGRID_"):].lower().replace("_", "-")
        assert flag in help_, (name, k, "names no flag of fedgrid " + cmd[0])
    for v in s.get("volumes", []):
        assert v.endswith(":/data"), (name, v)
print("compose: ok (%d services, flags and FEDGRID_* variables known to fedgrid)" % len(svcs))
PY
}

sections=("$@")
[ ${#sections[@]} -gt 0 ] || sections=(image systemd helm compose)
for s in "${sections[@]}"; do "check_$s"; done
