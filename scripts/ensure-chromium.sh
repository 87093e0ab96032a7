#!/usr/bin/env bash
# Make sure Debian's chromium (and a fixed font) is present: the browser tests and the PNG export
# use it. Installs it with apt-get when it is missing and we may (root, or passwordless sudo).
set -u
if [ -x /usr/bin/chromium ] && fc-list 2>/dev/null | grep -qi "DejaVu Sans"; then
  exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
  echo "ensure-chromium: no apt-get here; install Chromium yourself (browser tests will be skipped)" >&2
  exit 0
fi
SUDO=""
if [ "$(id -u)" != 0 ]; then
  if sudo -n true 2>/dev/null; then SUDO="sudo -n"; else
    echo "ensure-chromium: not root and no passwordless sudo; browser tests will be skipped" >&2
    exit 0
  fi
fi
echo "ensure-chromium: installing chromium and fonts-dejavu-core with apt-get" >&2
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq </dev/null >/dev/null 2>&1 || true
$SUDO apt-get install -y -qq --no-install-recommends chromium fonts-dejavu-core </dev/null >/dev/null 2>&1 \
  || echo "ensure-chromium: apt-get install failed; browser tests will be skipped" >&2
exit 0
