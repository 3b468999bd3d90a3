#!/usr/bin/env bash
# Submit an itk_rl training recipe to a running Ray cluster as a Ray job.
#   RAY_ADDRESS=http://HEAD:8265 cluster/submit.sh train critic_grpo [hydra overrides...]
#   RAY_ADDRESS=http://HEAD:8265 cluster/submit.sh sft critic_sft [hydra overrides...]
# The cluster's nodes must have itk_rl installed (cluster/README.md). USER_CODE, if set, is a
# folder shipped as the job's working_dir, e.g. the module holding your own reward function.
set -euo pipefail
if [ $# -lt 2 ]; then
  echo "usage: $0 train|sft RECIPE [hydra overrides...]" >&2
  exit 2
fi
entry=$1 recipe=$2
shift 2
case "$entry" in
  train | sft) ;;
  *) echo "$0: unknown entry point '$entry' (expected train or sft)" >&2; exit 2 ;;
esac
: "${RAY_ADDRESS:?set RAY_ADDRESS to the dashboard address of the cluster, e.g. http://HEAD:8265}"
args=(--address "$RAY_ADDRESS")
if [ -n "${USER_CODE:-}" ]; then
  args+=(--working-dir "$USER_CODE")
fi
exec ray job submit "${args[@]}" -- python -m "itk_rl.$entry" --config-name "$recipe" "$@"
