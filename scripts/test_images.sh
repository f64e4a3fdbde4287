#!/usr/bin/env bash
# Build the Action's image and the Space's image from this checkout and run them as GitHub's
# runner and a Hugging Face Space would (tests/image/), on a Docker engine this script finds or
# starts itself.
#
#   scripts/test_images.sh PYTHON     PYTHON: the dev venv's interpreter (pytest, the wheel build)
#
# Engine: an already running one (`docker info`), else Debian's docker.io started here with its
# own data folder (installed with apt-get when missing and we are root). Base image: the local
# python:3.11-slim, else a pull, else a stand-in made with debootstrap (no registry needed).
# Where no engine can be had (a laptop without root) it says so in one line and exits 0; with
# CI=true that is a failure.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${1:-.venv/bin/python}
ROOT_DIR=${GRADIENCE_DOCKER_ROOT:-/var/lib/gradience-hub-docker}
SOCK=/run/gradience-hub-docker.sock
ACTION_IMAGE=gradience-audit-action:test
SPACE_IMAGE=gradience-hub-space:test
BASE=python:3.11-slim
started_pid=""

say() { echo "test-images: $*"; }
skip_or_fail() {
  if [ "${CI:-}" = true ]; then say "FAILED: $*"; exit 1; fi
  say "skipped: $* (CI=true makes this a failure)"; exit 0
}
stop_engine() {
  if [ -n "$started_pid" ]; then kill "$started_pid" 2>/dev/null || true; wait "$started_pid" 2>/dev/null || true; fi
}
trap stop_engine EXIT

ensure_engine() {
  if command -v docker >/dev/null && docker info >/dev/null 2>&1; then return 0; fi
  if [ "$(id -u)" != 0 ]; then skip_or_fail "no Docker engine is running and starting one needs root"; fi
  if ! command -v dockerd >/dev/null || ! command -v debootstrap >/dev/null; then
    command -v apt-get >/dev/null || skip_or_fail "no Docker engine and no apt-get to install Debian's docker.io"
    say "installing Debian's docker.io, debootstrap, iptables"
    apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
      --no-install-recommends docker.io debootstrap iptables >/dev/null \
      || skip_or_fail "apt-get could not install docker.io"
  fi
  mkdir -p "$ROOT_DIR"
  # No bridge and no iptables rules: containers use the host's network (--network host), which
  # is also how they reach the tests' Hub and GitHub stand-ins on 127.0.0.1.
  dockerd --data-root "$ROOT_DIR" --host "unix://$SOCK" --iptables=false --bridge=none \
    --storage-driver=overlay2 --pidfile "$ROOT_DIR.pid" >"$ROOT_DIR.log" 2>&1 &
  started_pid=$!
  export DOCKER_HOST="unix://$SOCK"
  for _ in $(seq 1 60); do
    if docker info >/dev/null 2>&1; then return 0; fi
    kill -0 "$started_pid" 2>/dev/null || break
    sleep 0.5
  done
  tail -5 "$ROOT_DIR.log" >&2 || true
  skip_or_fail "dockerd did not start (log: $ROOT_DIR.log)"
}

# A stand-in for the official python:3.11-slim when no registry answers: Debian bookworm's
# Python 3.11 made to behave like it (python/pip on PATH, pip may install into the system).
make_base() {
  if docker image inspect "$BASE" >/dev/null 2>&1; then return 0; fi
  if timeout 60 docker pull -q "$BASE" >/dev/null 2>&1; then say "pulled $BASE"; return 0; fi
  say "no registry: making $BASE with debootstrap"
  local mirror rootfs
  mirror=$(sed -n 's/^URIs: *\([^ ]*\).*/\1/p' /etc/apt/sources.list.d/debian.sources 2>/dev/null | head -1)
  mirror=${mirror:-http://deb.debian.org/debian}
  rootfs=$(mktemp -d /var/tmp/gradience-base.XXXXXX)
  debootstrap --variant=minbase \
    --include=ca-certificates,netbase,tzdata,python3,python3-pip,python3-venv \
    bookworm "$rootfs" "$mirror" >"$rootfs.log" 2>&1 || { tail -5 "$rootfs.log"; exit 1; }
  # Machines behind a TLS-inspecting proxy trust it through extra CA certificates; the image
  # needs them to reach the package index (nothing else of the machine's pip settings).
  if compgen -G "/usr/local/share/ca-certificates/*.crt" >/dev/null; then
    cp /usr/local/share/ca-certificates/*.crt "$rootfs/usr/local/share/ca-certificates/"
    chroot "$rootfs" update-ca-certificates >/dev/null
  fi
  printf '[global]\ncert = /etc/ssl/certs/ca-certificates.crt\n' >"$rootfs/etc/pip.conf"
  rm -f "$rootfs"/usr/lib/python3.11/EXTERNALLY-MANAGED
  for exe in python python3 pip pip3; do
    ln -sf "/usr/bin/$( [ "${exe#pip}" != "$exe" ] && echo pip3 || echo python3)" "$rootfs/usr/local/bin/$exe"
  done
  tar -C "$rootfs" --numeric-owner -c . | docker import \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'ENV LANG=C.UTF-8' --change 'CMD ["python3"]' - "$BASE" >/dev/null
  rm -rf "$rootfs" "$rootfs.log"
}

timed() {  # timed LABEL CMD...: run, print the seconds it took
  local label=$1 start=$SECONDS; shift
  "$@"
  say "$label: $((SECONDS - start)) s"
}

quiet() {  # quiet CMD...: run with its output kept in a log, shown only when it fails
  local log rc=0
  log=$(mktemp)
  "$@" >"$log" 2>&1 || rc=$?
  if [ "$rc" != 0 ]; then tail -40 "$log" >&2; rm -f "$log"; say "FAILED ($rc): $*"; exit "$rc"; fi
  rm -f "$log"
}

ensure_engine
timed "base image $BASE ready" make_base
# The Action's image from the unchanged Dockerfile (core variant), as `uses:` builds it.
timed "built $ACTION_IMAGE" quiet docker build --network host -t "$ACTION_IMAGE" .
# The Space's image from this checkout's wheel (the release installs the published version).
ctx=$(mktemp -d)
trap 'rm -rf "$ctx"; stop_engine' EXIT
cp space/Dockerfile space/serve.yaml "$ctx/"
cp requirements/lock.txt "$ctx/constraints.txt"
timed "built the wheel" quiet "$PY" -m build --wheel --outdir "$ctx" .
wheel=$(basename "$ctx"/gradience_hub-*.whl)
timed "built $SPACE_IMAGE" quiet docker build --network host \
  --build-arg "GRADIENCE_HUB=./$wheel[serve]" \
  --build-arg PIP_CONSTRAINT=/tmp/install/constraints.txt -t "$SPACE_IMAGE" "$ctx"
say "$ACTION_IMAGE: $(docker image inspect -f '{{.Size}}' "$ACTION_IMAGE" | awk '{printf "%.0f MB", $1/1e6}'); $SPACE_IMAGE: $(docker image inspect -f '{{.Size}}' "$SPACE_IMAGE" | awk '{printf "%.0f MB", $1/1e6}')"
GRADIENCE_ACTION_IMAGE=$ACTION_IMAGE GRADIENCE_SPACE_IMAGE=$SPACE_IMAGE \
  timed "image tests" "$PY" -m pytest -q -p no:cacheprovider tests/image
