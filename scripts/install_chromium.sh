#!/usr/bin/env bash
# Debian's chromium, for the test that opens a generated run page in a real headless browser.
# Called by scripts/test.sh before the tests enter their network namespace (apt needs the
# network). Installs once, quietly; where it cannot (no root, no apt, no network) it says so and
# succeeds, and the browser test skips naming this script.
set -uo pipefail
if command -v chromium >/dev/null 2>&1; then
  exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
  echo "[itk] apt-get not found: cannot install chromium; the browser test will be skipped" >&2
  exit 0
fi
sudo=""
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
    sudo="sudo -n"
  else
    echo "[itk] not root and no password-less sudo: cannot install chromium;" \
      "the browser test will be skipped" >&2
    exit 0
  fi
fi
export DEBIAN_FRONTEND=noninteractive
if ! { $sudo apt-get update -qq && $sudo apt-get install -y -qq --no-install-recommends \
  chromium fonts-dejavu-core >/dev/null; }; then
  echo "[itk] apt-get could not install chromium; the browser test will be skipped" >&2
fi
exit 0
