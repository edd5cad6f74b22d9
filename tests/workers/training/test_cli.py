from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from workers.cli import app


def test_make_dataset_train_eval_and_bench_from_the_command_line(tmp_path: Path) -> None:
    runner = CliRunner()
    data = tmp_path / "motion"
    made = runner.invoke(
        app,
        ["make-dataset", "motion", str(data), "--count", "8", "--size", "32", "--frames", "8", "--seed", "4"],
    )
    assert made.exit_code == 0, made.output
    assert (data / "labels.csv").read_text().count("\n") == 9

    run = tmp_path / "run"
    trained = runner.invoke(
        app,
        [
            "train",
            str(data / "labels.csv"),
            "--out",
            str(run),
            "--resize",
            "32",
            "--crop",
            "32",
            "--epochs",
            "1",
            "--batch-size",
            "4",
            "--workers",
            "0",
            "--no-progress",
            "--half-out",
            str(tmp_path / "half.pt"),
        ],
    )
    assert trained.exit_code == 0, trained.output
    assert "step 2, 1 epochs" in trained.output
    assert (run / "last.pt").is_file() and (tmp_path / "half.pt").is_file()

    for decoder in ("training", "media"):
        out = tmp_path / f"eval-{decoder}"
        evaluated = runner.invoke(
            app,
            [
                "eval",
                str(tmp_path / "half.pt"),
                str(data),
                "--out",
                str(out),
                "--decoder",
                decoder,
                "--no-progress",
            ],
        )
        assert evaluated.exit_code == 0, evaluated.output
        report = json.loads((out / "eval.json").read_text())
        assert report["count"] == 8 and report["decoder"] == decoder
        assert (out / "confusion.png").stat().st_size > 0
    # Both decoders see the same pixels, so they agree clip for clip.
    a = json.loads((tmp_path / "eval-training" / "eval.json").read_text())
    b = json.loads((tmp_path / "eval-media" / "eval.json").read_text())
    assert a["confusion"] == b["confusion"]


def test_bench_temporal_runs_both_variants_on_one_split(tmp_path: Path) -> None:
    out = tmp_path / "bench"
    result = CliRunner().invoke(
        app,
        [
            "bench",
            "temporal",
            "--out",
            str(out),
            "--size",
            "32",
            "--frames",
            "4",
            "--train-count",
            "8",
            "--test-count",
            "8",
            "--epochs",
            "1",
            "--batch-size",
            "4",
            "--workers",
            "0",
            "--no-progress",
        ],
    )
    assert result.exit_code == 0, result.output
    report = json.loads((out / "temporal.json").read_text())
    assert [r["variant"] for r in report["results"]] == ["TSM", "TSN"]
    assert [r["shift_div"] for r in report["results"]] == [8, 0]
    assert report["chance"] == 0.25
    assert all(r["steps"] == 2 for r in report["results"])
    assert all(sum(map(sum, r["confusion"])) == 8 for r in report["results"])
    assert (out / "runs" / "tsn" / "confusion.png").is_file()
    assert "TSN vs TSM" in result.output
