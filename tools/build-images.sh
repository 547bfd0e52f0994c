#!/usr/bin/env bash
# Builds the images the chart's defaults name, from the repository's Dockerfiles, with no container
# daemon and no container registry (docs/images.md):
#
#   ghcr.io/cardano-forge/forge-manager:<appVersion>    services/forge-manager/Dockerfile
#   ghcr.io/cardano-forge/health-endpoint:<appVersion>  services/health-endpoint/Dockerfile
#   localhost/cardano-forge/node-standin:<content key>  tests/images/node-standin/Dockerfile (tests)
#
# Their base images are made here with mmdebstrap from the Debian packages pinned in
# tools/images/<base>.lock and passed to the Dockerfiles as build arguments; the services' Python
# packages are pinned (with hashes) in services/<service>/requirements.lock. Everything is cached by
# content under $CARDANO_FORGE_IMAGES_CACHE (default ${XDG_CACHE_HOME:-$HOME/.cache}/cardano-forge/
# images): a base by its package list, an image by its Dockerfile, the files it copies and its bases.
# The built images are saved as docker archives in .images/ with .images/images.json, the list that
# loads them into a node's containerd:
#
#   [{"name": "<image reference with tag>", "archive": "<file name in .images>", "bytes": <size>}]
#
# Usage: tools/build-images.sh [build]   build what changed (the default)
#        tools/build-images.sh lock [NAME...]  re-resolve the locks: the bases' Debian packages from
#                                        the mirror, the services' Python packages from the index
#                                        (NAME: a base or a service; default all)
#        tools/build-images.sh clean     remove this project's images from buildah's storage
# Needs root (buildah's storage in /var/lib/containers, mmdebstrap's root mode) and installs
# Debian's buildah, mmdebstrap and runc when missing.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
# shellcheck source=versions.env
. "$here/versions.env"

cache=${CARDANO_FORGE_IMAGES_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/cardano-forge/images}
outdir="$root/.images"
suite=$IMAGES_DEBIAN_SUITE
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
security_mirror=${DEBIAN_SECURITY_MIRROR:-http://deb.debian.org/debian-security}
epoch=${SOURCE_DATE_EPOCH:-1704067200}
ca_bundle=${IMAGES_CA_BUNDLE:-${SSL_CERT_FILE:-/etc/ssl/certs/ca-certificates.crt}}
label=org.cardano-forge.content-key

say() { printf '[images] %s\n' "$*" >&2; }
die() { printf '[images] error: %s\n' "$*" >&2; exit 1; }
sha() { sha256sum | cut -c1-64; }

# ---- the base images ------------------------------------------------------------------------------
# name -> Debian packages (their dependencies are resolved by apt; every version is in the lock).
declare -A BASE_PACKAGES=(
  [python]="python3 passwd ca-certificates"
  [python-build]="python3 passwd python3-venv ca-certificates"
  [go-build]="golang-$IMAGES_GO_VERSION-go"
)
declare -A BASE_ENV=(
  [python]="LANG=C.UTF-8"
  [python-build]="LANG=C.UTF-8"
  [go-build]="LANG=C.UTF-8 GOTOOLCHAIN=local PATH=/usr/lib/go-$IMAGES_GO_VERSION/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
)
BASES=(python python-build go-build)

sources=(
  "deb $mirror $suite main"
  "deb $mirror $suite-updates main"
  "deb $security_mirror $suite-security main"
  "deb $mirror $suite-backports main"
)
# Slim like Debian's own container images: no manuals, no documentation but the copyright files.
mmdebstrap_opts=(
  --mode=root --format=tar --components=main
  --aptopt='APT::Install-Recommends "false"'
  --dpkgopt=force-unsafe-io
  --dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-include=/usr/share/doc/*/copyright'
  --dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/info/*'
  --dpkgopt='path-exclude=/usr/share/locale/*' --dpkgopt='path-exclude=/usr/share/lintian/*'
  --hook-dir=/usr/share/mmdebstrap/hooks/merged-usr
  --customize-hook='rm -f "$1"/etc/dpkg/dpkg.cfg.d/99mmdebstrap "$1"/var/cache/ldconfig/aux-cache'
  --customize-hook='rm -rf "$1"/var/log/apt "$1"/var/log/dpkg.log "$1"/var/log/alternatives.log'
)

lockfile() { echo "$here/images/$1.lock"; }

# Services whose Python packages are pinned in services/<service>/requirements.lock
# (tools/images/pylock.py); their Dockerfiles install exactly those, by hash.
PY_SERVICES=(forge-manager health-endpoint)
py_lockfile() { echo "$root/services/$1/requirements.lock"; }
check_py_lock() {
  local out
  out=$(python3 "$here/images/pylock.py" check "$root/services/$1/pyproject.toml" "$(py_lockfile "$1")" 2>&1) \
    || die "${out#pylock: }"
}
lock_packages() { grep -v '^#' "$(lockfile "$1")" | sed '/^$/d'; }

# The keys name a recipe version ("base v1", "image v1"): bump it when this script changes how
# a base or an image is made in a way the hashed inputs do not show.
base_key() {
  local b=$1
  { echo "base v1 $b $suite"; echo "${BASE_ENV[$b]}"; printf '%s\n' "${mmdebstrap_opts[@]}"
    lock_packages "$b"; } | sha
}
base_tag() { echo "localhost/cardano-forge/base-$1:$suite-$(base_key "$1" | cut -c1-12)"; }

check_lock() {
  local b=$1 f
  f=$(lockfile "$b")
  [[ -f $f ]] || die "no $f: run 'make images-lock' to pin the packages of base '$b'"
  grep -qxF "# packages: ${BASE_PACKAGES[$b]}" "$f" \
    || die "base '$b' now selects '${BASE_PACKAGES[$b]}' but $f was made for another selection: run 'make images-lock'"
}

# mmdebstrap_base NAME TARBALL LISTFILE VARIANT INCLUDE: the root filesystem as a tarball and the
# installed packages (name=version) in LISTFILE. One line on failure, naming the log.
mmdebstrap_base() {
  local b=$1 tarball=$2 list=$3 variant=$4 include=$5 log="$cache/base-$1.log"
  if ! SOURCE_DATE_EPOCH=$epoch nice -n 10 mmdebstrap "${mmdebstrap_opts[@]}" \
      --variant="$variant" --include="$include" \
      --customize-hook="chroot \"\$1\" dpkg-query -W -f '\${Package}=\${Version}\n' | LC_ALL=C sort > '$list'" \
      "$suite" "$tarball" "${sources[@]}" > "$log" 2>&1; then
    local why
    why=$(grep -m1 -E "^E: (Version|Unable to locate|Package .* has no installation candidate)" "$log" || true)
    [[ -n $why ]] && die "base '$b': ${why#E: } on $mirror: the lock pins a version the mirror no longer serves; run 'make images-lock' and commit tools/images/*.lock (log: $log)"
    die "base '$b': mmdebstrap failed: $(grep -m1 '^E:' "$log" || tail -n1 "$log") (log: $log)"
  fi
}

base_tarball() { echo "$cache/base-$1-$(base_key "$1").tar"; }

# build_base NAME: the base's rootfs tarball in the cache, from the pinned packages.
build_base() {
  local b=$1 key tarball
  key=$(base_key "$b")
  tarball=$(base_tarball "$b")
  if [[ -f $tarball ]]; then
    say "base $b: cached (${key:0:12})"
  else
    say "base $b: mmdebstrap $suite with the $(lock_packages "$b" | wc -l) pinned packages of tools/images/$b.lock (cold: 2-4 min)"
    local start=$SECONDS
    mmdebstrap_base "$b" "$tarball.tmp" "$tarball.list" custom "$(lock_packages "$b" | paste -sd,)"
    if ! diff -q <(lock_packages "$b" | LC_ALL=C sort) "$tarball.list" >/dev/null; then
      rm -f "$tarball.tmp"
      die "base '$b': the installed packages differ from tools/images/$b.lock ($(diff <(lock_packages "$b" | LC_ALL=C sort) "$tarball.list" | grep -c '^[<>]') lines): run 'make images-lock'"
    fi
    mv "$tarball.tmp" "$tarball"; rm -f "$tarball.list"
    say "base $b: built in $((SECONDS - start)) s, $(($(stat -c %s "$tarball") / 1048576)) MiB"
  fi
}

# import_base NAME TARBALL TAG KEY: the tarball as an image in buildah's storage (unless there).
import_base() {
  local b=$1 tarball=$2 tag=$3 key=$4 ctr envs=() e
  if buildah inspect --type image "$tag" >/dev/null 2>&1; then return; fi
  for e in ${BASE_ENV[$b]}; do envs+=(--env "$e"); done
  ctr=$(buildah from --quiet scratch)
  if ! ( mnt=$(buildah mount "$ctr")
         tar -C "$mnt" --numeric-owner --xattrs --xattrs-include='*' -xf "$tarball"
         buildah umount "$ctr" >/dev/null
         buildah config "${envs[@]}" --cmd /bin/bash --label "$label=$key" \
           --label "org.opencontainers.image.description=Debian $suite base '$b' (tools/images/$b.lock)" "$ctr"
         buildah commit --quiet --timestamp "$epoch" "$ctr" "$tag" >/dev/null ); then
    buildah rm "$ctr" >/dev/null 2>&1 || true
    die "base $b: importing $tarball into buildah's storage failed"
  fi
  buildah rm "$ctr" >/dev/null 2>&1 || true
  say "base $b: imported as $tag"
}

# ---- the images -----------------------------------------------------------------------------------
app_version=$(sed -n 's/^appVersion: *"\{0,1\}\([^"]*\)"\{0,1\} *$/\1/p' "$root/charts/cardano-forge/Chart.yaml")
[[ -n $app_version ]] || die "no appVersion in charts/cardano-forge/Chart.yaml"

# name|Dockerfile|repository (tag: the chart's appVersion, or the content key when empty)|bases
IMAGES=(
  "forge-manager|services/forge-manager/Dockerfile|ghcr.io/cardano-forge/forge-manager:$app_version|go-build python-build python"
  "health-endpoint|services/health-endpoint/Dockerfile|ghcr.io/cardano-forge/health-endpoint:$app_version|python-build python"
  "node-standin|tests/images/node-standin/Dockerfile|localhost/cardano-forge/node-standin|python"
)
declare -A BASE_ARG=([python]=PYTHON_BASE [python-build]=PYTHON_BUILD_BASE [go-build]=GO_BUILD_BASE)

# stage_context DIR: the build context as .dockerignore describes it (everything excluded but the
# `!` lines, minus caches), copied to DIR, so a file the ignore list leaves out is missing here too.
stage_context() {
  local dir=$1 pattern f
  mkdir -p "$dir"
  ( cd "$root"
    shopt -s globstar nullglob
    sed -n 's/^!//p' .dockerignore | while read -r pattern; do
      for f in $pattern; do
        if [[ -d $f ]]; then find "$f" -type f; else echo "$f"; fi
      done
    done | grep -v -E '(^|/)(__pycache__|[^/]*\.egg-info)(/|$)|\.pyc$' | LC_ALL=C sort -u \
      | while read -r f; do cp -p --parents "$f" "$dir/"; done )
}

# copied_files DIR DOCKERFILE: the staged files the Dockerfile's COPY lines (not --from) take.
copied_files() {
  local dir=$1 dockerfile=$2 line src f
  local sources=()
  while read -r line; do
    read -ra words <<< "$line"
    [[ ${words[1]} == --from=* ]] && continue
    local args=()
    for w in "${words[@]:1}"; do [[ $w == --* ]] || args+=("$w"); done
    sources+=("${args[@]:0:${#args[@]}-1}")
  done < <(grep -E '^COPY ' "$dockerfile")
  ( cd "$dir" && find . -type f | sed 's#^\./##' | LC_ALL=C sort ) | while read -r f; do
    for src in "${sources[@]}"; do
      # shellcheck disable=SC2053  # a COPY source is a glob
      if [[ $f == $src || $f == "${src%/}"/* ]]; then echo "$f"; break; fi
    done
  done
}

# image_key NAME DOCKERFILE CONTEXT BASES: a hash of everything that goes into the image.
image_key() {
  local name=$1 dockerfile=$2 ctx=$3 b f
  { echo "image v1 $name"; cat "$root/$dockerfile"
    for b in $4; do echo "${BASE_ARG[$b]}=$(base_key "$b")"; done
    copied_files "$ctx" "$root/$dockerfile" | while read -r f; do
      printf '%s %s %s\n' "$f" "$(stat -c %a "$ctx/$f")" "$(sha < "$ctx/$f")"
    done; } | sha
}

build_image() {
  local name=$1 dockerfile=$2 ref=$3 bases=$4 ctx=$5 key tag archive b build_tag
  key=$(image_key "$name" "$dockerfile" "$ctx" "$bases")
  [[ $ref == *:* ]] && tag=$ref || tag="$ref:${key:0:12}"
  archive="$cache/$name-$key.tar"
  if [[ -f $archive ]]; then
    say "$name: cached (${key:0:12}) $tag"
  else
    local args=() start=$SECONDS
    for b in $bases; do args+=(--build-arg "${BASE_ARG[$b]}=$(base_tag "$b")"); done
    # pip checks the package index against this machine's CA bundle (which may hold a proxy's CA):
    # a build secret, mounted for the pip step of the build stage only (see the Dockerfiles).
    args+=(--secret "id=build-ca,src=$ca_bundle")
    # Built under a tag of its own content key, not the chart's reference: buildah's storage is the
    # machine's, and another worktree may be building another version of the same image meanwhile.
    # The archive carries the chart's reference. --layers keeps each Dockerfile step as a cached
    # image, so a change to a service's sources rebuilds only the steps after its COPY.
    build_tag="localhost/cardano-forge/build-$name:${key:0:12}"
    say "$name: buildah bud -f $dockerfile -t $tag (cold: 1-5 min)"
    nice -n 10 buildah bud --quiet --layers --pull=never --network=host --format=docker \
      --label "$label=$key" "${args[@]}" -f "$root/$dockerfile" -t "$build_tag" \
      --iidfile "$cache/$name.iid" "$ctx" \
      > "$cache/$name.log" 2>&1 || die "$name: buildah bud failed: $(tail -n1 "$cache/$name.log") (log: $cache/$name.log)"
    rm -f "$archive.tmp"
    # By image ID: the archive names the chart's reference only, not the build tag.
    buildah push --quiet "$(cat "$cache/$name.iid")" "docker-archive:$archive.tmp:$tag" >/dev/null
    mv "$archive.tmp" "$archive"
    prune_build_tags "$name"
    say "$name: built in $((SECONDS - start)) s"
  fi
  ln -f "$archive" "$outdir/$name.tar" 2>/dev/null || cp "$archive" "$outdir/$name.tar"
  prune_archives "$name" "$archive"
  printf '%s\t%s.tar\t%s\n' "$tag" "$name" "$(stat -c %s "$outdir/$name.tar")" >> "$outdir/images.tsv"
  say "$name: .images/$name.tar $(($(stat -c %s "$archive") / 1048576)) MiB"
}

write_manifest() {
  python3 - "$outdir/images.tsv" "$outdir/images.json" <<'EOF'
import json, os, sys
rows = [line.rstrip("\n").split("\t") for line in open(sys.argv[1])]
entries = [{"name": n, "archive": a, "bytes": int(b)} for n, a, b in rows]
with open(sys.argv[2] + ".tmp", "w") as out:
    json.dump(entries, out, indent=2)
    out.write("\n")
os.replace(sys.argv[2] + ".tmp", sys.argv[2])
EOF
  rm -f "$outdir/images.tsv"
}

# Archives of an image beyond the newest few (other worktrees may be building other versions).
prune_archives() {
  local name=$1 keep=$2 f
  ls -t "$cache/$name"-*.tar 2>/dev/null | tail -n +5 | while read -r f; do
    [[ $f == "$keep" ]] || rm -f "$f"
  done
}

# Build tags of an image beyond the newest few (their steps are the layer cache of the next build;
# other worktrees may be building other versions).
prune_build_tags() {
  { buildah images --noheading --format '{{.CreatedAtRaw}} {{.Name}}:{{.Tag}}' \
      --filter "reference=localhost/cardano-forge/build-$1" 2>/dev/null || true; } \
    | LC_ALL=C sort -r | tail -n +5 | while read -r _ _ _ _ ref; do
        buildah rmi "$ref" >/dev/null 2>&1 || true
      done
}

# ---- prerequisites --------------------------------------------------------------------------------
prerequisites() {
  [[ $(id -u) == 0 ]] || die "make images needs root (buildah's storage in /var/lib/containers, mmdebstrap's root mode): run it as root"
  command -v python3 >/dev/null 2>&1 || die "no python3 on PATH: install Python 3.11 or newer"
  [[ -f $ca_bundle ]] || die "no CA bundle at $ca_bundle (pip in the image builds checks PyPI against it): set IMAGES_CA_BUNDLE to this machine's bundle"
  local missing=() p
  for p in buildah mmdebstrap runc; do command -v "$p" >/dev/null 2>&1 || missing+=("$p"); done
  if ((${#missing[@]})); then
    command -v apt-get >/dev/null 2>&1 || die "missing ${missing[*]} and no apt-get: install ${missing[*]} by hand"
    say "installing Debian packages: ${missing[*]}"
    DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 update -qq
    DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -qq \
      --no-install-recommends "${missing[@]}" >/dev/null || die "apt-get install ${missing[*]} failed"
  fi
}

cmd_build() {
  prerequisites
  mkdir -p "$cache" "$outdir"
  local start=$SECONDS b spec ctx pids=() failed=0
  for b in "${BASES[@]}"; do check_lock "$b"; done
  for b in "${PY_SERVICES[@]}"; do check_py_lock "$b"; done
  # The bases at once: mostly downloads and dpkg, and each is cached on its own.
  for b in "${BASES[@]}"; do build_base "$b" & pids+=($!); done
  for b in "${pids[@]}"; do wait "$b" || failed=1; done
  ((failed == 0)) || die "a base image failed (the lines above say which)"
  for b in "${BASES[@]}"; do import_base "$b" "$(base_tarball "$b")" "$(base_tag "$b")" "$(base_key "$b")"; done
  ctx=$(mktemp -d "$cache/context.XXXXXX")
  trap "rm -rf '$ctx'" EXIT
  stage_context "$ctx"
  rm -f "$outdir/images.tsv"
  for spec in "${IMAGES[@]}"; do
    IFS='|' read -r name dockerfile ref bases <<< "$spec"
    build_image "$name" "$dockerfile" "$ref" "$bases" "$ctx"
  done
  write_manifest
  say "done in $((SECONDS - start)) s: .images/images.json"
}

# lock_python SERVICE: resolve the service's Python packages inside the python-build base (the
# image's interpreter and platform) into services/<service>/requirements.lock.
lock_python() {
  local svc=$1 ctr out envs=() e
  build_base python-build
  import_base python-build "$(base_tarball python-build)" "$(base_tag python-build)" "$(base_key python-build)"
  for e in PIP_INDEX_URL PIP_EXTRA_INDEX_URL PYPI_SIMPLE_URL; do
    [[ -n ${!e:-} ]] && envs+=(--env "$e=${!e}")
  done
  say "$svc: resolving the Python packages of services/$svc/pyproject.toml on the package index"
  out=$(mktemp -d -p "$cache")
  ctr=$(buildah from --quiet --pull=never "$(base_tag python-build)")
  if ! buildah run --network=host "${envs[@]}" \
      -v "$root/services/$svc/pyproject.toml:/src/$svc/pyproject.toml:ro" \
      -v "$here/images/pylock.py:/src/pylock.py:ro" -v "$out:/out" \
      -v "$ca_bundle:/etc/ssl/certs/ca-certificates.crt:ro" "$ctr" -- sh -c \
      "python3 -m venv /tmp/resolver && /tmp/resolver/bin/python /src/pylock.py resolve /src/$svc/pyproject.toml /out/requirements.lock" \
      >&2; then
    buildah rm "$ctr" >/dev/null 2>&1 || true; rm -rf "$out"
    die "$svc: resolving its Python packages failed (the line above says why)"
  fi
  buildah rm "$ctr" >/dev/null 2>&1 || true
  cp "$out/requirements.lock" "$(py_lockfile "$svc")"; rm -rf "$out"
}

cmd_lock() {
  prerequisites
  mkdir -p "$cache" "$here/images"
  local b list tarball names=("$@")
  ((${#names[@]})) || names=("${BASES[@]}" "${PY_SERVICES[@]}")
  for b in "${names[@]}"; do
    if [[ " ${PY_SERVICES[*]} " == *" $b "* ]]; then lock_python "$b"; continue; fi
    [[ -n ${BASE_PACKAGES[$b]:-} ]] || die "unknown base or service '$b' (${BASES[*]} ${PY_SERVICES[*]})"
    say "base $b: resolving ${BASE_PACKAGES[$b]} on $mirror ($suite)"
    list=$(mktemp); tarball=$(mktemp -p "$cache")
    mmdebstrap_base "$b" "$tarball" "$list" essential "${BASE_PACKAGES[$b]// /,}"
    { echo "# Debian packages of the base image '$b' (tools/build-images.sh), every version pinned."
      echo "# Resolved from $mirror ($suite, -updates, -security, -backports) on $(date -u +%Y-%m-%d)."
      echo "# Regenerate with 'make images-lock' when the mirror no longer serves one of them."
      echo "# packages: ${BASE_PACKAGES[$b]}"
      cat "$list"; } > "$(lockfile "$b")"
    rm -f "$list" "$tarball"
    say "base $b: $(lock_packages "$b" | wc -l) packages in tools/images/$b.lock"
  done
}

cmd_clean() {
  command -v buildah >/dev/null 2>&1 || { say "no buildah: nothing to remove"; return; }
  local id
  buildah images --all --noheading --filter "label=$label" --format '{{.ID}}' | sort -u \
    | while read -r id; do buildah rmi --force "$id" >/dev/null 2>&1 || true; done
  rm -rf "$outdir"
  say "removed this project's images from buildah's storage and .images/ (the cache $cache stays)"
}

case ${1:-build} in
  build) cmd_build;;
  lock) shift; cmd_lock "$@";;
  clean) cmd_clean;;
  *) die "unknown command '$1' (build, lock, clean)";;
esac
