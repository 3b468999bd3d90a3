#!/usr/bin/env bash
# Debian's SLURM (slurm-wlm, with munge), for tests/cluster/test_slurm.py, which runs
# cluster/slurm/itk_rl.sbatch on a two-node SLURM cluster it starts on this machine. Meant to be
# called before the tests enter their network namespace (apt needs the network). Installs once,
# quietly; where it cannot (no root, no apt, no network) it says so and succeeds, and that test
# skips naming this script.
set -uo pipefail
if command -v slurmctld >/dev/null 2>&1 && command -v munged >/dev/null 2>&1; then
  exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
  echo "[itk] apt-get not found: cannot install slurm-wlm; the SLURM test will be skipped" >&2
  exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
  echo "[itk] not root: cannot install slurm-wlm; the SLURM test will be skipped" >&2
  exit 0
fi
export DEBIAN_FRONTEND=noninteractive
if ! { apt-get update -qq && apt-get install -y -qq --no-install-recommends \
  slurm-wlm munge >/dev/null; }; then
  echo "[itk] apt-get could not install slurm-wlm; the SLURM test will be skipped" >&2
fi
exit 0
