"""Benchmark data: fetched at the pinned revision into the data folder when missing (the network
mocked), used from there afterwards; offline or with fetching off, an error that names the file
to download, where it comes from, and where to put it. Hub datasets: test_hub_fetch.py."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
import requests
from PIL import Image

import itk_rl.eval.benchmarks.fetch as fetch_module
from itk_rl.cli import main
from itk_rl.eval.benchmarks import BenchmarkDataMissing
from itk_rl.eval.harness.comm import CommBench
from itk_rl.eval.harness.rise import RiseBench
from itk_rl.eval.harness.wise import WiseBench

COMMIT = "eb51174483a5de2e34e8614cf9dfb3319ee7fcd0"


class Response:
    def __init__(self, status: int, content: bytes = b"") -> None:
        self.status_code, self.content = status, content


def offline(url: str, timeout: float) -> Response:
    raise requests.ConnectionError(f"no network for {url}")


def test_offline_run_names_the_file_to_download(monkeypatch, tmp_path: Path, capsys) -> None:
    monkeypatch.setattr(fetch_module.requests, "get", offline)
    data = tmp_path / "wise"
    assert main(["eval", "wise", f"benchmark.data_dir={data}", "generator=testbed"]) == 2
    err = capsys.readouterr().err
    wanted = data / "WISE_legacy/data/cultural_common_sense.json"
    assert f"benchmark data not found: {wanted}" in err
    assert f"put it at {wanted}" in err and "ConnectionError" in err
    assert (
        f"PKU-YuanGroup/WISE (WISE_legacy/data/cultural_common_sense.json at commit {COMMIT})"
        in err
    )


def test_fetching_off_names_the_source(tmp_path: Path) -> None:
    with pytest.raises(BenchmarkDataMissing, match=r"data_verified/merge.json from https://raw"):
        WiseBench("verified", str(tmp_path), fetch=False, commit=COMMIT).samples()
    with pytest.raises(
        BenchmarkDataMissing, match=r"test_data.pth\) from hub dataset weisuxi/CoMM"
    ):
        CommBench(str(tmp_path), fetch=False).samples()


def test_wise_files_are_fetched_at_the_pinned_commit_once(monkeypatch, tmp_path: Path) -> None:
    asked = []
    rows = {
        "cultural_common_sense": (1, "Cultural knowledge"),
        "spatio-temporal_reasoning": (401, "Time"),
        "natural_science": (901, "Chemistry"),
    }

    def get(url: str, timeout: float) -> Response:
        asked.append(url)
        pid, category = rows[url.rsplit("/", 1)[1].removesuffix(".json")]
        record = {"prompt_id": pid, "Category": category, "Subcategory": "s", "Prompt": "p",
                  "Explanation": "e"}  # fmt: skip
        return Response(200, json.dumps([record]).encode())

    monkeypatch.setattr(fetch_module.requests, "get", get)
    bench = WiseBench("legacy", str(tmp_path), commit=COMMIT)
    assert [s.key for s in bench.samples()] == ["1", "401", "901"]
    assert asked[0] == (
        f"https://raw.githubusercontent.com/PKU-YuanGroup/WISE/{COMMIT}/"
        "WISE_legacy/data/cultural_common_sense.json"
    )
    assert (tmp_path / "WISE_legacy/data/natural_science.json").is_file()
    monkeypatch.setattr(fetch_module.requests, "get", offline)
    assert len(bench.samples()) == 3  # from the folder now: no network needed


def test_rise_fetches_the_records_then_their_images(monkeypatch, tmp_path: Path) -> None:
    png = io.BytesIO()
    Image.new("RGB", (4, 4), "red").save(png, format="PNG")
    record = {"index": "t1", "category": "temporal_reasoning", "instruction": "i",
              "image": "temporal_reasoning_images/1.png", "reference": "r"}  # fmt: skip

    def get(url: str, timeout: float) -> Response:
        if url.endswith("data_total.json"):
            return Response(200, json.dumps([record]).encode())
        return Response(200, png.getvalue()) if url.endswith("/1.png") else Response(404)

    monkeypatch.setattr(fetch_module.requests, "get", get)
    bench = RiseBench(str(tmp_path), revision="abc123", data_file="data/data_total.json")
    (sample,) = bench.samples()
    assert sample.input_images == (tmp_path / "data/temporal_reasoning_images/1.png",)
    assert sample.request().images[0].shape == (4, 4, 3)
