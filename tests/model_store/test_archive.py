"""`tsmindex model build` and the TorchServe config rendered for an archive."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from model_store.archive import read_manifest
from model_store.tsm import ModelCard, load_model
from workers.cli import app
from workers.cli.serving import render_ts_config

ROOT = Path(__file__).resolve().parents[2]
runner = CliRunner()
BUILD = ["model", "build", "--random-init", "--arch", "resnet18", "--num-segments", "2", "--crop", "32"]


@pytest.fixture(scope="module")
def archive(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("mar")
    result = runner.invoke(app, [*BUILD, "--num-classes", "3", "--precision", "fp32", "--out", str(out)])
    assert result.exit_code == 0, result.output
    return out / "tsm.mar"


def test_archive_holds_handler_card_weights_and_the_model_code(archive: Path) -> None:
    with zipfile.ZipFile(archive) as z:
        names = set(z.namelist())
        card = ModelCard.from_dict(json.loads(z.read("card.json")))
        model_config = z.read("model-config.yaml").decode()
    tsm_sources = {f"model_store/tsm/{p.name}" for p in (ROOT / "model_store" / "tsm").glob("*.py")}
    assert names == {
        "MAR-INF/MANIFEST.json",
        "handler.py",
        "card.json",
        "weights.pt",
        "model-config.yaml",
        "model_store/__init__.py",
        "model_store/inference.py",
        "model_store/int8.py",
        *tsm_sources,
    }
    assert (card.name, card.version) == ("tsm-resnet18-random", "random-seed0")
    assert card.classes == ("class_0", "class_1", "class_2")
    assert (card.config.arch, card.config.num_segments, card.preprocess.crop) == ("resnet18", 2, 32)
    assert model_config == "precision: fp32\n"
    manifest: dict[str, str] = read_manifest(archive)["model"]  # type: ignore[assignment]
    keys = ("modelName", "modelVersion", "serializedFile", "handler", "configFile")
    assert {k: manifest[k] for k in keys} == {
        "modelName": "tsm",
        "modelVersion": "random-seed0",
        "serializedFile": "weights.pt",
        "handler": "handler.py",
        "configFile": "model-config.yaml",
    }


def test_archive_weights_are_the_seeded_random_init(archive: Path, tmp_path: Path) -> None:
    with zipfile.ZipFile(archive) as z:
        z.extract("weights.pt", tmp_path)
    model, _ = load_model(tmp_path / "weights.pt")
    again = tmp_path / "again"
    result = runner.invoke(app, [*BUILD, "--num-classes", "3", "--out", str(again)])
    assert result.exit_code == 0, result.output
    with zipfile.ZipFile(again / "tsm.mar") as z:
        z.extract("weights.pt", again)
    other, _ = load_model(again / "weights.pt")
    for (name, a), (_, b) in zip(model.state_dict().items(), other.state_dict().items(), strict=True):
        assert torch.equal(a, b), name


@pytest.mark.parametrize(
    "args",
    [
        ["model", "build", "--num-classes", "3"],  # neither source
        ["model", "build", "--random-init", "--checkpoint", "x.pt", "--num-classes", "3"],  # both
        ["model", "build", "--random-init"],  # no classes
        [*BUILD, "--num-classes", "3", "--precision", "int8"],
    ],
)
def test_build_refuses_bad_arguments(args: list[str], tmp_path: Path) -> None:
    result = runner.invoke(app, [*args, "--out", str(tmp_path)])
    assert result.exit_code == 2
    assert not (tmp_path / "tsm.mar").exists()


def test_ts_config_serves_the_archive_with_the_chosen_batch(
    archive: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from services.core.config import get_settings

    monkeypatch.setenv("TSMINDEX_TORCHSERVE_INFERENCE_URL", "http://127.0.0.1:18080")
    monkeypatch.setenv("TSMINDEX_TORCHSERVE_MAX_BATCH_DELAY_MS", "75")
    monkeypatch.setenv("TSMINDEX_TORCHSERVE_WORKERS", "2")
    get_settings.cache_clear()
    try:
        text, name = render_ts_config(archive, batch_size=12)
    finally:
        get_settings.cache_clear()
    lines = text.splitlines()
    assert name == "tsm"
    # The per-run lines come after the base file's, so they win.
    assert lines.index("inference_address=http://127.0.0.1:18080") > lines.index(
        "inference_address=http://127.0.0.1:8080"
    )
    models = json.loads(
        next(line for line in reversed(lines) if line.startswith("models="))[len("models=") :]
    )
    assert models == {
        "tsm": {
            "random-seed0": {
                "defaultVersion": True,
                "marName": "tsm.mar",
                "minWorkers": 2,
                "maxWorkers": 2,
                "batchSize": 12,
                "maxBatchDelay": 75,
                "responseTimeout": 120,
            }
        }
    }
    assert "disable_token_authorization=false" in lines
    assert "enable_model_api=false" in lines
    assert "metrics_mode=prometheus" in lines
    metrics_config = next(line for line in lines if line.startswith("metrics_config="))
    assert Path(metrics_config.split("=", 1)[1]).is_file()
