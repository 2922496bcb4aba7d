#!/usr/bin/env bash
# Checks a built Parley .deb (npm run dist, where the Electron binary exists) with
# Debian's own tools: dpkg-deb (fields, dependencies, file list) and
# desktop-file-validate (the desktop entry inside). Usage: scripts/check-deb.sh dist/parley_*.deb
set -euo pipefail
deb="${1:?usage: scripts/check-deb.sh path/to/parley.deb}"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
fail() { echo "check-deb: $*" >&2; exit 1; }

dpkg-deb --info "$deb" >/dev/null || fail "not a Debian package: $deb"
depends="$(dpkg-deb --field "$deb" Depends)"
for dep in libsecret-1-0 libpulse0 libwebrtc-audio-processing1 pulseaudio-utils libnss3 libgtk-3-0; do
  grep -q "$dep" <<<"$depends" || fail "Depends lacks $dep: $depends"
done
dpkg-deb --extract "$deb" "$work"
desktop="$(find "$work/usr/share/applications" -name '*.desktop' | head -n1)"
[ -n "$desktop" ] || fail "no desktop file in /usr/share/applications"
desktop-file-validate "$desktop" | tee "$work/validate.txt"
[ ! -s "$work/validate.txt" ] || fail "desktop-file-validate complained"
grep -q '^MimeType=.*x-scheme-handler/parley;' "$desktop" || fail "no x-scheme-handler/parley in $desktop"
grep -q '^Exec=.* %U$' "$desktop" || fail "Exec does not take links (%U)"
ls "$work"/usr/share/icons/hicolor/*/apps/parley.png >/dev/null 2>&1 || fail "no hicolor icons"
[ -x "$work/opt/Parley/parley" ] || fail "no /opt/Parley/parley"
echo "check-deb: $deb OK ($(dpkg-deb --field "$deb" Package) $(dpkg-deb --field "$deb" Version))"
