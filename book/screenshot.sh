#!/usr/bin/env bash
# A reader's check of the built book: headless Chromium opens pages of the built HTML and saves,
# for each page, a screenshot (PAGE.png) and the DOM after its scripts ran (PAGE.dom.html).
#
#   book/screenshot.sh [HTML_DIR] [OUT_DIR] [PAGE ...]
#
# HTML_DIR defaults to book/_build/html, OUT_DIR to book/_build/screenshots, PAGE (paths relative
# to HTML_DIR) to index.html plus every chapter page. Needs Debian's `chromium`
# (`apt-get install chromium`). Nothing is fetched from the network: the flags below stop
# Chromium's own background traffic, and the book itself loads only local files.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
html="$(cd "${1:-$here/_build/html}" && pwd)"
out="${2:-$here/_build/screenshots}"
shift $(( $# > 2 ? 2 : $# ))
mkdir -p "$out"
out="$(cd "$out" && pwd)"

browser="${CHROMIUM:-$(command -v chromium || command -v chromium-browser || true)}"
if [ -z "$browser" ]; then
  echo "screenshot.sh: chromium not found; install it with: apt-get install chromium" >&2
  exit 3
fi

pages=("$@")
if [ ${#pages[@]} -eq 0 ]; then
  pages=(index.html)
  for f in "$html"/*.html "$html"/notebooks/*.html; do
    [ -e "$f" ] || continue
    case "$(basename "$f")" in index.html|genindex.html|search.html) continue ;; esac
    pages+=("${f#"$html"/}")
  done
fi

chromium_run() {  # a fresh profile per run, removed afterwards
  local profile rc=0  # TMPDIR too: Chromium leaves org.chromium.* folders there
  profile="$(mktemp -d)"
  # --no-sandbox: Chromium refuses to start as root otherwise. The virtual time budget lets
  # require.js and the widget manager finish drawing before the shot is taken.
  TMPDIR="$profile" timeout 120 "$browser" --headless --no-sandbox --disable-gpu --disable-quic --no-first-run \
    --disable-background-networking --disable-component-update --disable-sync \
    --disable-dev-shm-usage --hide-scrollbars --user-data-dir="$profile" \
    --virtual-time-budget=15000 --window-size=1280,2000 "$@" 2>/dev/null || rc=$?
  rm -rf "$profile"
  return $rc
}

for page in "${pages[@]}"; do
  [ -f "$html/$page" ] || { echo "screenshot.sh: no such page: $html/$page" >&2; exit 2; }
  name="${page%.html}"; name="${name//\//_}"
  chromium_run --screenshot="$out/$name.png" "file://$html/$page" >/dev/null
  chromium_run --dump-dom "file://$html/$page" >"$out/$name.dom.html"
  echo "$out/$name.png"
done
