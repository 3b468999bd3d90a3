#!/usr/bin/env bash
# The whole test suite, from a bare machine: set up (or reuse) .venv, lint, then pytest.
# The install needs the package registries; the tests run inside a loopback-only network
# namespace where the host allows one, so every Ray, gloo and HTTP test talks over loopback.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
bash scripts/ensure_env.sh
bash scripts/install_chromium.sh
bash scripts/install_slurm.sh
.venv/bin/ruff check .
.venv/bin/ruff format --check .
export RAY_AUTH_MODE=disabled
if unshare -n true 2>/dev/null && command -v ip >/dev/null; then
  exec unshare -n sh -c 'ip link set lo up && exec .venv/bin/python -m pytest "$@"' sh "$@"
fi
echo "[itk] no network namespace here (needs root and iproute2): running tests on the host network" >&2
exec .venv/bin/python -m pytest "$@"
