#!/usr/bin/env bash
# Submit an itk_rl driver to a running Ray cluster as a Ray job:
#   cluster/submit.sh train critic_grpo [hydra overrides...]        (critic GRPO)
#   cluster/submit.sh sft critic_sft [hydra overrides...]           (critic or planner SFT)
#   cluster/submit.sh build_data data_real [hydra overrides...]     (the data build)
# The dashboard listens on the head's loopback: forward it first (`ray dashboard
# cluster/ray_cluster.yaml`, or `ssh -L 8265:127.0.0.1:8265 HEAD`); RAY_ADDRESS defaults to that
# forward, http://127.0.0.1:8265. Token auth is on (RAY_AUTH_MODE=token): the token is
# RAY_AUTH_TOKEN, RAY_AUTH_TOKEN_PATH or ~/.ray/auth_token, the cluster's own. The nodes must
# have itk_rl installed (cluster/README.md). USER_CODE, if set, is a folder shipped as the job's
# working_dir, e.g. the module holding your own reward function.
set -euo pipefail
if [ $# -lt 2 ]; then
  echo "usage: $0 train|sft|build_data RECIPE [hydra overrides...]" >&2
  exit 2
fi
entry=$1 recipe=$2
shift 2
case "$entry" in
  train | sft | build_data) ;;
  *)
    echo "$0: unknown driver '$entry' (expected train, sft or build_data)" >&2
    exit 2
    ;;
esac
export RAY_AUTH_MODE=${RAY_AUTH_MODE:-token}
args=(--address "${RAY_ADDRESS:-http://127.0.0.1:8265}")
if [ -n "${USER_CODE:-}" ]; then
  args+=(--working-dir "$USER_CODE")
fi
exec ray job submit "${args[@]}" -- python -m "itk_rl.$entry" --config-name "$recipe" "$@"
