#!/bin/sh
# Offline checks of the Helm chart deploy/helm/ferrohsm:
#   1. installs helm and kubeconform at pinned versions with `go install` (once per version);
#   2. builds kubeconform's JSON schemas from two registry packages (once per version):
#      Kubernetes kinds from the kubernetes-validate wheel (PyPI), the ServiceMonitor from the
#      prometheus-operator Go module's CRD;
#   3. lints and renders the chart with every ci/*-values.yaml and validates each rendering with
#      `kubeconform -strict` against those schemas only (no network: no default location);
#   4. checks that value sets the chart must refuse fail to render.
#
# Needs: go (>= 1.26 for these helm and kubeconform versions), python3 with pip, network access
# to the Go module proxy and PyPI for the first run only. Reruns reuse everything.
#
#   deploy/helm/tools/check.sh            # tools and schemas under target/tools
#   TOOLS=/tmp/tools deploy/helm/tools/check.sh
set -eu

HELM_MODULE=helm.sh/helm/v3/cmd/helm@v3.22.0
KUBECONFORM_MODULE=github.com/yannh/kubeconform/cmd/kubeconform@v0.8.0
# Kubernetes JSON schemas, v1.25 to v1.37, in the wheel of this PyPI package.
KV_VERSION=1.37.0
KV_SHA256=85136d018a27b50ec7fc049d902bfa5193f5976807e6c0f408e3ab6fe078cad9
# The Go module whose jsonnet/prometheus-operator/servicemonitors-crd.json is the CRD.
PO_MODULE=github.com/prometheus-operator/prometheus-operator@v0.85.0
# The Kubernetes versions the renderings are validated against: the chart's kubeVersion floor
# and the newest the wheel has.
KUBE_VERSIONS="1.25.0 1.37.0"

HERE=$(cd "$(dirname "$0")" && pwd)
CHART=$(cd "$HERE/../ferrohsm" && pwd)
ROOT=$(cd "$HERE/../../.." && pwd)
TOOLS=${TOOLS:-$ROOT/target/tools}
BIN=$TOOLS/bin
SCHEMAS=$TOOLS/k8s-schemas
OUT=$TOOLS/helm-rendered
mkdir -p "$BIN" "$SCHEMAS" "$OUT" "$TOOLS/downloads"

# --- 1. helm and kubeconform -------------------------------------------------------------
go_install() { # name module
    if [ -x "$BIN/$1" ] && [ "$(cat "$BIN/$1.version" 2>/dev/null)" = "$2" ]; then
        return
    fi
    start=$(date +%s)
    GOBIN=$BIN go install "$2"
    printf '%s' "$2" > "$BIN/$1.version"
    echo "check.sh: installed $2 in $(( $(date +%s) - start )) s"
}
go_install kubeconform "$KUBECONFORM_MODULE"
go_install helm "$HELM_MODULE"

# --- 2. schemas ----------------------------------------------------------------------------
STAMP="kubernetes-validate==$KV_VERSION $PO_MODULE $KUBE_VERSIONS $(sha256sum "$HERE/kubeconform-schemas.py" | cut -c1-16)"
if [ "$(cat "$SCHEMAS/.stamp" 2>/dev/null)" != "$STAMP" ]; then
    start=$(date +%s)
    wheel=$TOOLS/downloads/kubernetes_validate-$KV_VERSION-py3-none-any.whl
    if ! echo "$KV_SHA256  $wheel" | sha256sum -c --status 2>/dev/null; then
        python3 -m pip download --quiet --no-deps --only-binary=:all: \
            --dest "$TOOLS/downloads" "kubernetes-validate==$KV_VERSION"
        echo "$KV_SHA256  $wheel" | sha256sum -c --quiet
    fi
    crd_dir=$(cd "$TOOLS" && go mod download -json "$PO_MODULE" | python3 -c 'import json,sys; print(json.load(sys.stdin)["Dir"])')
    set --
    for v in $KUBE_VERSIONS; do set -- "$@" --kubernetes-version "$v"; done
    rm -rf "$SCHEMAS"
    python3 "$HERE/kubeconform-schemas.py" --wheel "$wheel" "$@" \
        --crd "$crd_dir/jsonnet/prometheus-operator/servicemonitors-crd.json" --out "$SCHEMAS"
    printf '%s' "$STAMP" > "$SCHEMAS/.stamp"
    echo "check.sh: schemas in $SCHEMAS in $(( $(date +%s) - start )) s"
fi

# --- 3. every value set renders and validates ----------------------------------------------
failed=0
for kube in $KUBE_VERSIONS; do
    for values in "$CHART"/ci/*-values.yaml; do
        name=$(basename "$values" -values.yaml)
        file=$OUT/$kube-$name.yaml
        if ! lint=$("$BIN/helm" lint --strict --quiet --kube-version "$kube" --values "$values" "$CHART" 2>&1); then
            printf '%s\n' "$lint"
            echo "check.sh: helm lint failed for $name on $kube"
            exit 1
        fi
        "$BIN/helm" template ci "$CHART" --namespace ferrohsm --kube-version "$kube" \
            --values "$values" > "$file"
        printf 'check.sh: %-7s %-17s ' "$kube" "$name"
        "$BIN/kubeconform" -strict -summary -kubernetes-version "$kube" \
            -schema-location "$SCHEMAS/{{ .NormalizedKubernetesVersion }}-standalone{{ .StrictSuffix }}/{{ .ResourceKind }}{{ .KindSuffix }}.json" \
            -schema-location "$SCHEMAS/crds/{{ .Group }}/{{ .ResourceKind }}_{{ .ResourceAPIVersion }}.json" \
            "$file" || failed=1
    done
done

# --- 4. what the chart must refuse ---------------------------------------------------------
refuses() { # expected-message helm-template-args...
    expected=$1
    shift
    if out=$("$BIN/helm" template ci "$CHART" --kube-version 1.37.0 "$@" 2>&1); then
        echo "check.sh: rendered, but must fail: $*"
        failed=1
    elif ! printf '%s' "$out" | grep -qF "$expected"; then
        echo "check.sh: failed without \"$expected\": $*: $out"
        failed=1
    else
        echo "check.sh: refused as it should: $*"
    fi
}
refuses "replicaCount is 3, but keyStore=filesystem" --set replicaCount=3
refuses "replicaCount is 2, but keyStore=sqlite" --set keyStore=sqlite --set replicaCount=2
refuses "needs tls.clientCA.existingSecret" --set tls.clientAuth=optional
refuses "need probes.exec.clientCertSecret" --set tls.clientAuth=required --set tls.clientCA.existingSecret=ca
refuses "probes.type=httpGet cannot work" --set tls.clientAuth=required \
    --set tls.clientCA.existingSecret=ca --set probes.exec.clientCertSecret=c --set probes.type=httpGet
refuses "settings.listen is set by the chart" --set settings.listen=0.0.0.0:1
refuses "value must be one of" --set keyStore=memory
refuses "additional properties 'replicas' not allowed" --set replicas=3
refuses "value must be one of" --set masterKey.defaultMode=292

if [ "$failed" -ne 0 ]; then
    echo "check.sh: the chart has problems (above)"
    exit 1
fi
echo "check.sh: the chart renders and validates with every value set"
