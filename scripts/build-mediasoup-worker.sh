#!/usr/bin/env bash
# Builds mediasoup's C++ worker (the SFU's media process) from the npm tarball
# of the exact version in package-lock.json, with Debian's libraries, and
# caches the binary OUTSIDE the checkout, keyed by version and patches:
#
#   ${XDG_CACHE_HOME:-$HOME/.cache}/parley/mediasoup-worker/<version>-<sha1 of patches>/mediasoup-worker
#
# so a machine (or a CI runner) builds it once per version/patch set (~16 min
# on 2 cores) and every checkout, worktree and later `npm ci` reuses it.
#
#   scripts/build-mediasoup-worker.sh          build if missing; print the binary's path
#   scripts/build-mediasoup-worker.sh --path   print where the binary belongs (exit 1 if not built)
#
# Why not mediasoup's own postinstall: it downloads a prebuilt worker from
# GitHub (unreachable here), or with MEDIASOUP_LOCAL_DEV /
# MEDIASOUP_SKIP_WORKER_PREBUILT_DOWNLOAD builds with meson subprojects that it
# downloads too. With MEDIASOUP_WORKER_BIN set, its postinstall does nothing
# (npm-scripts.mjs, case 'postinstall') and the library spawns that binary
# (Worker.js, getDefaultWorkerBin) — scripts/node-env.sh exports it.
#
# Patches (patches/mediasoup-worker/*.diff, each with a header saying why;
# .diff and not .patch so that patch-package, which walks patches/, ignores
# them): meson version, system dependencies as local subprojects, the
# unordered_dense shim, the libsrtp2 port, the BIO_CB_RETURN bit-test fix.
#
# Debian packages (scripts/setup.sh installs them): meson ninja-build
# pkg-config libuv1-dev libssl-dev libsrtp2-dev libabsl-dev
# flatbuffers-compiler libflatbuffers-dev g++.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PATCH_DIR="$ROOT/patches/mediasoup-worker"

log() { printf '\033[1mmediasoup-worker:\033[0m %s\n' "$*" >&2; }

# The mediasoup version package-lock.json resolves (no Node needed: node-env.sh
# calls --path on every with-node.sh).
lock_version() {
  awk '/^    "node_modules\/mediasoup": \{/ { inside = 1; next }
       inside && /"version":/ { gsub(/[",]/, "", $2); print $2; exit }
       inside && /^    \}/ { exit }' "$ROOT/package-lock.json"
}

VERSION="$(lock_version)"
if [ -z "$VERSION" ]; then
  log "mediasoup is not in package-lock.json"
  exit 1
fi
PATCH_HASH="$(cat "$PATCH_DIR"/*.diff | sha1sum | cut -d' ' -f1)"
CACHE_ROOT="${XDG_CACHE_HOME:-$HOME/.cache}/parley/mediasoup-worker"
DEST="$CACHE_ROOT/$VERSION-$PATCH_HASH"
BIN="$DEST/mediasoup-worker"

if [ "${1:-}" = "--path" ]; then
  echo "$BIN"
  [ -x "$BIN" ]
  exit
fi

if [ -x "$BIN" ]; then
  log "cached: $BIN"
  echo "$BIN"
  exit 0
fi

mkdir -p "$CACHE_ROOT"
# One build per machine at a time (two set-ups started together wait here).
exec 9>"$CACHE_ROOT/.lock"
flock 9
if [ -x "$BIN" ]; then
  log "built meanwhile: $BIN"
  echo "$BIN"
  exit 0
fi

for tool in meson ninja pkg-config flatc c++ node npm patch flock; do
  command -v "$tool" >/dev/null || { log "missing $tool (scripts/setup.sh installs the Debian packages)"; exit 1; }
done

WORK="$(mktemp -d "$CACHE_ROOT/build-$VERSION.XXXXXX")"
trap 'rm -rf "$WORK"' EXIT

log "fetching mediasoup@$VERSION from the npm registry"
want_integrity="$(awk '/^    "node_modules\/mediasoup": \{/ { inside = 1; next }
  inside && /"integrity":/ { gsub(/[",]/, "", $2); print $2; exit }
  inside && /^    \}/ { exit }' "$ROOT/package-lock.json")"
(cd "$WORK" && npm pack --silent "mediasoup@$VERSION" >/dev/null)
tarball="$WORK/mediasoup-$VERSION.tgz"
got_integrity="sha512-$(node -e 'process.stdout.write(require("node:crypto").createHash("sha512").update(require("node:fs").readFileSync(process.argv[1])).digest("base64"))' "$tarball")"
if [ -n "$want_integrity" ] && [ "$got_integrity" != "$want_integrity" ]; then
  log "integrity mismatch for $tarball: lock says $want_integrity, got $got_integrity"
  exit 1
fi
tar xzf "$tarball" -C "$WORK" package/worker
SRC="$WORK/package/worker"

for p in "$PATCH_DIR"/*.diff; do
  log "applying $(basename "$p")"
  patch -d "$SRC" -p1 -s --batch --forward --no-backup-if-mismatch < "$p"
done

log "meson setup (nodownload: a subproject that would download fails here)"
meson setup --wrap-mode=nodownload --buildtype=release -Db_pie=true -Db_staticpic=true \
  "$WORK/build" "$SRC" >"$WORK/meson-setup.log" 2>&1 || { cat "$WORK/meson-setup.log" >&2; exit 1; }

jobs="${MEDIASOUP_WORKER_BUILD_JOBS:-$(nproc)}"
log "building with $jobs jobs (about 16 min on 2 cores)"
start=$(date +%s)
nice -n 10 ninja -C "$WORK/build" -j "$jobs" mediasoup-worker >&2
log "built in $(( $(date +%s) - start )) s"

mkdir -p "$DEST"
install -m 0755 "$WORK/build/mediasoup-worker" "$DEST/mediasoup-worker.tmp"
mv -f "$DEST/mediasoup-worker.tmp" "$BIN"
log "installed $BIN"
echo "$BIN"
