"""What the drivers share (`itk_rl.job`): the metrics log trimmed on resume, and the check that
the recipe's actor groups fit the Ray cluster (CPUs, GPUs, custom resources, node labels)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from itk_rl.eval.report import read_metrics
from itk_rl.job import check_resources, trim_metrics


def _line(step: int) -> str:
    return json.dumps({"step": step, "loss": 1.0 / step}) + "\n"


def _write(path: Path, steps: range, tail: str = "") -> None:
    path.write_text("".join(_line(step) for step in steps) + tail)


def test_a_torn_last_line_is_dropped_and_complete_records_up_to_the_step_kept(
    tmp_path: Path,
) -> None:
    # A run killed while appending step 6 leaves half a record and no newline.
    path = tmp_path / "metrics.jsonl"
    _write(path, range(1, 6), tail=_line(6)[:17])
    trim_metrics(path, 3)
    assert path.read_text() == "".join(_line(step) for step in range(1, 4))

    _write(path, range(1, 6), tail=_line(6)[:17])
    trim_metrics(path, 10)  # the checkpoint is newer than every complete record
    assert [r["step"] for r in read_metrics(path)] == [1, 2, 3, 4, 5]
    with path.open("a") as handle:  # what the resumed run appends reads back whole
        handle.write(_line(6))
    assert [r["step"] for r in read_metrics(path)] == [1, 2, 3, 4, 5, 6]


def test_a_whole_last_record_without_its_newline_is_kept_on_a_line_of_its_own(
    tmp_path: Path,
) -> None:
    path = tmp_path / "metrics.jsonl"
    _write(path, range(1, 3), tail=_line(3).rstrip("\n"))
    trim_metrics(path, 3)
    with path.open("a") as handle:
        handle.write(_line(4))
    assert [r["step"] for r in read_metrics(path)] == [1, 2, 3, 4]


def test_an_unreadable_line_before_the_last_raises_naming_the_file_and_line(
    tmp_path: Path,
) -> None:
    path = tmp_path / "metrics.jsonl"
    _write(path, range(1, 3), tail=_line(3)[:10] + "\n" + _line(4))
    before = path.read_text()
    with pytest.raises(ValueError, match=r"metrics\.jsonl line 3 of 4: .*corrupt"):
        trim_metrics(path, 4)
    assert path.read_text() == before  # nothing is lost to the error


def test_a_missing_log_stays_missing(tmp_path: Path) -> None:
    trim_metrics(tmp_path / "metrics.jsonl", 3)
    assert not (tmp_path / "metrics.jsonl").exists()


def _group(cpus: float, resources: dict | None = None, selector: dict | None = None) -> dict:
    """An actor group's recipe node as the check reads it."""
    return {"num_cpus": cpus, "num_gpus": 0, "resources": resources, "label_selector": selector}


@pytest.mark.usefixtures("ray_local")  # one node: 8 CPUs, no GPU, no custom resources
def test_custom_resources_the_cluster_lacks_or_has_too_few_of_fail_naming_each_demand() -> None:
    fits = {"rollout": (2, _group(1)), "trainer": (2, _group(2, {}))}
    check_resources(fits)  # 6 of 8 CPUs, nothing else asked: passes
    groups = {
        "generator": (2, _group(1, {"flux": 1})),
        "judge": (1, _group(0.5, {"flux": 0.5})),
        "trainer": (2, _group(3)),
    }
    with pytest.raises(RuntimeError) as error:
        check_resources(groups)
    message = str(error.value)
    assert "asks for 8.5 CPU (generator 2, judge 0.5, trainer 6) but the Ray cluster has 8" in (
        message
    )
    assert "asks for 2.5 flux (generator 2, judge 0.5) but the Ray cluster has 0" in message
    assert "it has CPU 8, GPU 0, flux 0" in message


@pytest.mark.usefixtures("ray_local")
def test_a_label_selector_is_checked_against_the_nodes_it_matches() -> None:
    import ray

    node = ray.get_runtime_context().get_node_id()
    on_it = {"ray.io/node-id": node}
    check_resources({"judge": (2, _group(1, selector=on_it))})
    check_resources({"judge": (2, _group(1, selector={"ray.io/node-id": f"in(x, {node})"}))})
    unknown = r"generator asks for nodes labelled \{'node-type': 'flux'\} but no node matches"
    with pytest.raises(RuntimeError, match=unknown):
        check_resources({"generator": (1, _group(1, selector={"node-type": "flux"}))})
    with pytest.raises(RuntimeError, match=r"judge asks for nodes labelled .* but no node matches"):
        check_resources({"judge": (1, _group(1, selector={"ray.io/node-id": f"!in({node})"}))})
    with pytest.raises(
        RuntimeError, match=r"asks for 9 CPU \(judge 9\) but the part of the cluster labelled"
    ):
        check_resources({"judge": (3, _group(3, selector=on_it))})
