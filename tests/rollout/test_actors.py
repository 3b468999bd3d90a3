"""What a group whose actors cannot come back says is missing, read from the live nodes of a
local Ray cluster (8 CPUs, no GPU, no custom resource, no labels of ours)."""

from __future__ import annotations

import pytest

from itk_rl.rollout.actors import unmet_needs


@pytest.mark.parametrize(
    ("needs", "said"),
    [
        (
            {"num_cpus": 1, "num_gpus": 0, "resources": {"flux": 1}},
            "judge needs {'flux': 1.0}; no live node has it",
        ),
        (
            {"num_cpus": 1, "num_gpus": 1},
            "judge needs {'GPU': 1.0}; no live node has it",
        ),
        (
            {"num_cpus": 1, "num_gpus": 0, "label_selector": {"node-type": "flux"}},
            "judge needs a node labelled {'node-type': 'flux'}; no live node has those labels",
        ),
        (
            {"num_cpus": 64, "num_gpus": 0},
            "judge needs {'CPU': 64.0}; no live node has it",
        ),
        (
            {"num_cpus": 1, "num_gpus": 0},
            "judge needs {'CPU': 1.0}; a live node has it, so other actors hold it or the actor "
            "was still starting (a slow model load needs a longer restart_timeout_s)",
        ),
    ],
)
def test_unmet_needs_names_what_no_live_node_has(
    ray_local: None, needs: dict[str, object], said: str
) -> None:
    assert unmet_needs("judge", **needs) == said
