#!/usr/bin/env bash
# Builds the test-bed tools from the Go module proxy and links them into .tools/bin.
#
#   kube-apiserver, kubectl  k8s.io/kubernetes  (wrapper module mapping staging modules)
#   etcd, etcdctl            go.etcd.io/etcd     (server/v3 and etcdctl/v3)
#   helm                     helm.sh/helm/v3
#   helm-docs                github.com/norwoodj/helm-docs (the chart README's values table)
#   prometheus-sd            github.com/prometheus/prometheus (with kubernetes_sd_configs)
#   prometheus, promtool,    Debian's packages (apt-get install when missing)
#   alertmanager
#
# Builds are cached by version under $CARDANO_FORGE_TOOLS_CACHE
# (default ${XDG_CACHE_HOME:-$HOME/.cache}/cardano-forge/tools), so a second run is seconds.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
# shellcheck source=versions.env
. "$here/versions.env"

cache=${CARDANO_FORGE_TOOLS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/cardano-forge/tools}
bindir="$root/.tools/bin"
mkdir -p "$cache" "$bindir"

say() { printf '[tools] %s\n' "$*" >&2; }
die() { printf '[tools] error: %s\n' "$*" >&2; exit 1; }

command -v go >/dev/null 2>&1 || die "no Go toolchain on PATH: install Go 1.26 or newer, put its bin directory on PATH and run 'make tools' again"
goversion=$(go env GOVERSION)
case "$goversion" in
  go1.2[6-9]*|go1.[3-9]*) ;;
  *) say "Go is $goversion; Kubernetes $KUBERNETES_VERSION needs go1.26 (the go command fetches that toolchain from the module proxy if allowed)";;
esac

export CGO_ENABLED=0 GOFLAGS=-trimpath GOWORK=off

# link NAME TARGET: .tools/bin/NAME -> TARGET
link() { ln -sfn "$2" "$bindir/$1"; }

# wrapper_module DIR MODULE@VERSION [replace lines...]: a throwaway module that requires MODULE.
wrapper_module() {
  local dir=$1 req=$2; shift 2
  mkdir -p "$dir"
  {
    echo "module cardanoforge.invalid/toolbuild"
    echo
    echo "go 1.26"
    for r in "$@"; do echo "replace $r"; done
  } > "$dir/go.mod"
  (cd "$dir" && go get "$req")
}

build_kubernetes() {
  local v=$KUBERNETES_VERSION out="$cache/kubernetes-$KUBERNETES_VERSION"
  if [[ -x $out/kube-apiserver && -x $out/kubectl ]]; then
    say "kubernetes $v: cached"
  else
    say "kubernetes $v: building kube-apiserver and kubectl from the Go module proxy (cold: 10-20 min on 2 cores)"
    local minor=${v#v1.} src="$out.src"
    local staging=v0.${minor}
    rm -rf "$src"; mkdir -p "$src"
    # k8s.io/kubernetes replaces its staging modules with local paths; map them to published versions.
    local modfile
    modfile=$(cd "$src" && go mod download -json "k8s.io/kubernetes@$v" | sed -n 's/.*"GoMod": "\(.*\)",/\1/p')
    [[ -f $modfile ]] || die "could not download k8s.io/kubernetes@$v from the Go module proxy"
    mapfile -t replaces < <(sed -n 's#^[[:space:]]*\(k8s.io/[a-z0-9-]*\) => ./staging/src/.*#\1 => \1 '"$staging"'#p' "$modfile")
    say "kubernetes $v: ${#replaces[@]} staging modules mapped to $staging"
    wrapper_module "$src" "k8s.io/kubernetes/cmd/kube-apiserver@$v" "${replaces[@]}"
    (cd "$src" && go get "k8s.io/kubernetes/cmd/kubectl@$v")
    local major=1 minorn=${minor%%.*} date
    date=$(date -u +%Y-%m-%dT%H:%M:%SZ)
    local ld=""
    for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
      ld+=" -X $pkg.gitVersion=$v -X $pkg.gitMajor=$major -X $pkg.gitMinor=$minorn"
      ld+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=$date -X $pkg.gitCommit=$v"
    done
    mkdir -p "$out.tmp"
    for cmd in kube-apiserver kubectl; do
      say "kubernetes $v: go build $cmd"
      (cd "$src" && go build -ldflags "-s -w$ld" -o "$out.tmp/$cmd" "k8s.io/kubernetes/cmd/$cmd")
    done
    rm -rf "$out"; mv "$out.tmp" "$out"; rm -rf "$src"
  fi
  link kube-apiserver "$out/kube-apiserver"
  link kubectl "$out/kubectl"
}

build_etcd() {
  local v=$ETCD_VERSION out="$cache/etcd-$ETCD_VERSION"
  if [[ -x $out/etcd && -x $out/etcdctl ]]; then
    say "etcd $v: cached"
  else
    say "etcd $v: building etcd and etcdctl (cold: 2-4 min)"
    local src="$out.src"
    rm -rf "$src"
    wrapper_module "$src" "go.etcd.io/etcd/server/v3@$v"
    (cd "$src" && go get "go.etcd.io/etcd/etcdctl/v3@$v")
    mkdir -p "$out.tmp"
    (cd "$src" && go build -ldflags "-s -w" -o "$out.tmp/etcd" go.etcd.io/etcd/server/v3)
    (cd "$src" && go build -ldflags "-s -w" -o "$out.tmp/etcdctl" go.etcd.io/etcd/etcdctl/v3)
    rm -rf "$out"; mv "$out.tmp" "$out"; rm -rf "$src"
  fi
  link etcd "$out/etcd"
  link etcdctl "$out/etcdctl"
}

build_helm() {
  local v=$HELM_VERSION out="$cache/helm-$HELM_VERSION"
  if [[ -x $out/helm ]]; then
    say "helm $v: cached"
  else
    say "helm $v: building helm (cold: 2-4 min)"
    local src="$out.src"
    rm -rf "$src"
    wrapper_module "$src" "helm.sh/helm/v3/cmd/helm@$v"
    mkdir -p "$out.tmp"
    (cd "$src" && go build -ldflags "-s -w -X helm.sh/helm/v3/internal/version.version=$v -X helm.sh/helm/v3/internal/version.gitTreeState=clean" -o "$out.tmp/helm" helm.sh/helm/v3/cmd/helm)
    rm -rf "$out"; mv "$out.tmp" "$out"; rm -rf "$src"
  fi
  link helm "$out/helm"
}

build_helm_docs() {
  local v=$HELM_DOCS_VERSION out="$cache/helm-docs-$HELM_DOCS_VERSION"
  if [[ -x $out/helm-docs ]]; then
    say "helm-docs $v: cached"
  else
    say "helm-docs $v: building helm-docs (cold: 1-2 min)"
    local src="$out.src"
    rm -rf "$src"
    wrapper_module "$src" "github.com/norwoodj/helm-docs/cmd/helm-docs@$v"
    mkdir -p "$out.tmp"
    (cd "$src" && go build -ldflags "-s -w -X main.version=$v" -o "$out.tmp/helm-docs" github.com/norwoodj/helm-docs/cmd/helm-docs)
    rm -rf "$out"; mv "$out.tmp" "$out"; rm -rf "$src"
  fi
  link helm-docs "$out/helm-docs"
}

build_prometheus_sd() {
  local v=$PROMETHEUS_SD_VERSION out="$cache/prometheus-sd-$PROMETHEUS_SD_VERSION"
  if [[ -x $out/prometheus ]]; then
    say "prometheus-sd $v: cached"
  else
    say "prometheus-sd $v: building prometheus with Kubernetes service discovery (cold: 5-10 min)"
    local src="$out.src"
    rm -rf "$src"
    wrapper_module "$src" "github.com/prometheus/prometheus/cmd/prometheus@$v"
    mkdir -p "$out.tmp"
    (cd "$src" && go build -ldflags "-s -w" -o "$out.tmp/prometheus" github.com/prometheus/prometheus/cmd/prometheus)
    rm -rf "$out"; mv "$out.tmp" "$out"; rm -rf "$src"
  fi
  link prometheus-sd "$out/prometheus"
}

debian_packages() {
  local missing=()
  command -v prometheus >/dev/null 2>&1 && command -v promtool >/dev/null 2>&1 || missing+=(prometheus)
  command -v prometheus-alertmanager >/dev/null 2>&1 || missing+=(prometheus-alertmanager)
  if ((${#missing[@]})); then
    command -v apt-get >/dev/null 2>&1 || die "missing ${missing[*]} and no apt-get: install Debian's ${missing[*]} packages by hand"
    [[ $(id -u) == 0 ]] || die "missing Debian packages ${missing[*]}: run 'sudo apt-get install ${missing[*]}' and 'make tools' again"
    say "installing Debian packages: ${missing[*]}"
    # The packages' maintainer scripts would start system services (ports 9090, 9093, 9100);
    # tests start their own instances on free ports, so forbid service starts during the install.
    local policy=/usr/sbin/policy-rc.d created=0
    if [[ ! -e $policy ]]; then printf '#!/bin/sh\nexit 101\n' > "$policy"; chmod +x "$policy"; created=1; fi
    DEBIAN_FRONTEND=noninteractive apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null \
      || { ((created)) && rm -f "$policy"; die "apt-get install ${missing[*]} failed"; }
    ((created)) && rm -f "$policy"
  fi
  link prometheus "$(command -v prometheus)"
  link promtool "$(command -v promtool)"
  link alertmanager "$(command -v prometheus-alertmanager)"
}

targets=("$@")
((${#targets[@]})) || targets=(debian etcd helm helm-docs prometheus-sd kubernetes)
for t in "${targets[@]}"; do
  case $t in
    debian) debian_packages;;
    etcd) build_etcd;;
    helm) build_helm;;
    helm-docs) build_helm_docs;;
    prometheus-sd) build_prometheus_sd;;
    kubernetes) build_kubernetes;;
    *) die "unknown tool '$t' (debian, etcd, helm, helm-docs, prometheus-sd, kubernetes)";;
  esac
done
say "tools ready in .tools/bin: $(ls "$bindir" | tr '\n' ' ')"
