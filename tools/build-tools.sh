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
# The target 'node' (make node-tools) adds what the single-node test cluster needs:
#   kubelet, kube-controller-manager,  k8s.io/kubernetes (the same wrapper module)
#   kube-scheduler, kube-proxy
#   coredns                  github.com/coredns/coredns
#   pause                    tools/node/pause.c, static (gcc)
#   nodeprobe                tests/harness/nodeprobe, the smoke tests' image binary
#   containerd, runc, CNI    Debian's containerd, runc, containernetworking-plugins,
#   plugins, iptables, nft   iptables, nftables (apt-get install when missing)
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

# k8s_wrapper DIR CMD: a wrapper module requiring k8s.io/kubernetes/cmd/CMD; k8s.io/kubernetes
# replaces its staging modules with local paths, so they are mapped to their published versions.
k8s_wrapper() {
  local src=$1 cmd=$2 v=$KUBERNETES_VERSION
  local staging=v0.${v#v1.}
  rm -rf "$src"; mkdir -p "$src"
  local modfile
  modfile=$(cd "$src" && go mod download -json "k8s.io/kubernetes@$v" | sed -n 's/.*"GoMod": "\(.*\)",/\1/p')
  [[ -f $modfile ]] || die "could not download k8s.io/kubernetes@$v from the Go module proxy"
  mapfile -t replaces < <(sed -n 's#^[[:space:]]*\(k8s.io/[a-z0-9-]*\) => ./staging/src/.*#\1 => \1 '"$staging"'#p' "$modfile")
  say "kubernetes $v: ${#replaces[@]} staging modules mapped to $staging"
  wrapper_module "$src" "k8s.io/kubernetes/cmd/$cmd@$v" "${replaces[@]}"
}

# k8s_build SRC OUTDIR CMD...: go build each command with the version stamped in.
k8s_build() {
  local src=$1 outdir=$2 v=$KUBERNETES_VERSION; shift 2
  local minor=${v#v1.} date ld=""
  date=$(date -u +%Y-%m-%dT%H:%M:%SZ)
  for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    ld+=" -X $pkg.gitVersion=$v -X $pkg.gitMajor=1 -X $pkg.gitMinor=${minor%%.*}"
    ld+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=$date -X $pkg.gitCommit=$v"
  done
  mkdir -p "$outdir"
  for cmd in "$@"; do
    (cd "$src" && go get "k8s.io/kubernetes/cmd/$cmd@$v")
    say "kubernetes $v: go build $cmd"
    (cd "$src" && nice -n 10 go build -ldflags "-s -w$ld" -o "$outdir/$cmd" "k8s.io/kubernetes/cmd/$cmd")
  done
}

build_kubernetes() {
  local v=$KUBERNETES_VERSION out="$cache/kubernetes-$KUBERNETES_VERSION"
  if [[ -x $out/kube-apiserver && -x $out/kubectl ]]; then
    say "kubernetes $v: cached"
  else
    say "kubernetes $v: building kube-apiserver and kubectl from the Go module proxy (cold: 10-20 min on 2 cores)"
    k8s_wrapper "$out.src" kube-apiserver
    rm -rf "$out.tmp"
    k8s_build "$out.src" "$out.tmp" kube-apiserver kubectl
    rm -rf "$out"; mv "$out.tmp" "$out"; rm -rf "$out.src"
  fi
  link kube-apiserver "$out/kube-apiserver"
  link kubectl "$out/kubectl"
}

NODE_COMPONENTS=(kubelet kube-controller-manager kube-scheduler kube-proxy)

build_node_kubernetes() {
  local v=$KUBERNETES_VERSION out="$cache/kubernetes-node-$KUBERNETES_VERSION" cmd ok=1
  for cmd in "${NODE_COMPONENTS[@]}"; do [[ -x $out/$cmd ]] || ok=0; done
  if ((ok)); then
    say "kubernetes node $v: cached"
  else
    say "kubernetes node $v: building ${NODE_COMPONENTS[*]} (cold: about 10 min on 2 cores, warm 6 min)"
    k8s_wrapper "$out.src" kubelet
    rm -rf "$out.tmp"
    k8s_build "$out.src" "$out.tmp" "${NODE_COMPONENTS[@]}"
    rm -rf "$out"; mv "$out.tmp" "$out"; rm -rf "$out.src"
  fi
  for cmd in "${NODE_COMPONENTS[@]}"; do link "$cmd" "$out/$cmd"; done
}

build_coredns() {
  local v=$COREDNS_VERSION out="$cache/coredns-$COREDNS_VERSION"
  if [[ -x $out/coredns ]]; then
    say "coredns $v: cached"
  else
    say "coredns $v: building (cold: 2-3 min)"
    local src="$out.src"
    rm -rf "$src" "$out.tmp"
    wrapper_module "$src" "github.com/coredns/coredns@$v"
    mkdir -p "$out.tmp"
    (cd "$src" && nice -n 10 go build -ldflags "-s -w" -o "$out.tmp/coredns" github.com/coredns/coredns)
    rm -rf "$out"; mv "$out.tmp" "$out"; rm -rf "$src"
  fi
  link coredns "$out/coredns"
}

# Small binaries cached by the hash of their source: the pause binary and the smoke tests' probe.
build_node_images_binaries() {
  local hash out
  hash=$(cat "$root/tools/node/pause.c" | sha256sum | cut -c1-16)
  out="$cache/pause-$hash"
  if [[ ! -x $out/pause ]]; then
    command -v gcc >/dev/null 2>&1 || die "no gcc to build the static pause binary: run 'apt-get install gcc libc6-dev' and 'make node-tools' again"
    mkdir -p "$out.tmp"
    gcc -static -O2 -s -Wall -Wextra -o "$out.tmp/pause" "$root/tools/node/pause.c" \
      || die "gcc -static failed for tools/node/pause.c: run 'apt-get install libc6-dev' (the static C library) and 'make node-tools' again"
    rm -rf "$out"; mv "$out.tmp" "$out"
  fi
  link pause "$out/pause"
  local probe="$root/tests/harness/nodeprobe"
  hash=$(cat "$probe/go.mod" "$probe/main.go" | sha256sum | cut -c1-16)
  out="$cache/nodeprobe-$hash"
  if [[ ! -x $out/nodeprobe ]]; then
    mkdir -p "$out.tmp"
    (cd "$probe" && go build -ldflags "-s -w" -o "$out.tmp/nodeprobe" .)
    rm -rf "$out"; mv "$out.tmp" "$out"
  fi
  link nodeprobe "$out/nodeprobe"
}

build_node() {
  node_debian_packages
  build_node_kubernetes
  build_coredns
  build_node_images_binaries
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

# apt_install PKG...: install Debian packages (as root), never starting their services.
apt_install() {
  command -v apt-get >/dev/null 2>&1 || die "missing $* and no apt-get: install Debian's $* packages by hand"
  [[ $(id -u) == 0 ]] || die "missing Debian packages $*: run 'sudo apt-get install $*' and 'make tools' again"
  say "installing Debian packages: $*"
  # Maintainer scripts would start system services (prometheus on 9090, containerd on its default
  # socket); the tests start their own instances, so forbid service starts during the install.
  local policy=/usr/sbin/policy-rc.d created=0
  if [[ ! -e $policy ]]; then printf '#!/bin/sh\nexit 101\n' > "$policy"; chmod +x "$policy"; created=1; fi
  local apt=(apt-get -o DPkg::Lock::Timeout=600 -qq)
  DEBIAN_FRONTEND=noninteractive "${apt[@]}" update
  DEBIAN_FRONTEND=noninteractive "${apt[@]}" install -y --no-install-recommends "$@" >/dev/null \
    || { ((created)) && rm -f "$policy"; die "apt-get install $* failed"; }
  ((created)) && rm -f "$policy"
  return 0
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
  ((${#missing[@]} == 0)) || apt_install "${missing[@]}"
  link prometheus "$(command -v prometheus)"
  link promtool "$(command -v promtool)"
  link alertmanager "$(command -v prometheus-alertmanager)"
}

node_debian_packages() {
  local missing=()
  command -v containerd >/dev/null 2>&1 && command -v containerd-shim-runc-v2 >/dev/null 2>&1 \
    && command -v ctr >/dev/null 2>&1 || missing+=(containerd)
  command -v runc >/dev/null 2>&1 || missing+=(runc)
  [[ -x /usr/lib/cni/bridge && -x /usr/lib/cni/host-local && -x /usr/lib/cni/loopback ]] \
    || missing+=(containernetworking-plugins)
  command -v iptables >/dev/null 2>&1 || missing+=(iptables)
  command -v nft >/dev/null 2>&1 || missing+=(nftables)
  ((${#missing[@]} == 0)) || apt_install "${missing[@]}"
  local cmd
  for cmd in containerd containerd-shim-runc-v2 ctr runc; do link "$cmd" "$(command -v "$cmd")"; done
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
    node) build_node;;
    node-debian) node_debian_packages;;
    *) die "unknown tool '$t' (debian, etcd, helm, helm-docs, prometheus-sd, kubernetes, node)";;
  esac
done
say "tools ready in .tools/bin: $(ls "$bindir" | tr '\n' ' ')"
