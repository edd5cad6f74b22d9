"""int8 on CPU: quantizing the shipped motion model on motion clips keeps its labels, and the int8
graph serves through ClipModel, the handler and the in-process engine; wrong set-ups fail clearly."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from pydantic import ValidationError
from typer.testing import CliRunner

from model_store.archive import CARD_FILE, ArchiveError, build_archive, read_manifest
from model_store.handler import TSMHandler
from model_store.inference import ClipModel
from model_store.int8 import INT8_FILE, Int8Network, Int8Unavailable
from model_store.quantize import QuantizationError, quantize_int8
from model_store.tsm import load_model, read_card
from services.core.config import Settings
from workers.cli import app
from workers.inference import InProcessEngine
from workers.media import sample_clips
from workers.training.shipped import SHIPPED_MODEL, write_demo_clips

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def int8_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The shipped model quantized by the CLI on 12 motion clips it never saw (seed 7)."""
    work = tmp_path_factory.mktemp("int8")
    write_demo_clips(work / "calibration", count=12, seed=7)
    out = work / "motion-int8.onnx"
    args = [
        "model",
        "quantize",
        "--checkpoint",
        str(SHIPPED_MODEL),
        "--calibration",
        str(work / "calibration"),
    ]
    result = CliRunner().invoke(app, [*args, "--out", str(out), "--clips", "12"])
    assert result.exit_code == 0, result.output
    assert "12 clips from 12 videos" in result.output
    return out


@pytest.fixture(scope="module")
def held_out(tmp_path_factory: pytest.TempPathFactory) -> tuple[list[np.ndarray], list[str]]:
    """Twelve other motion clips (seed 2024) and their true labels."""
    directory = tmp_path_factory.mktemp("held-out")
    labels = write_demo_clips(directory, count=12, seed=2024)
    rows = [line.split(",") for line in labels.read_text().splitlines()[1:]]
    clips = [sample_clips(directory / path, resize=32, crop=32).clips[0].frames for path, _ in rows]
    return clips, [label for _, label in rows]


def _top1(results: list[dict[str, object]]) -> list[str]:
    return [r["labels"][0]["label"] for r in results]  # type: ignore[index]


def test_int8_gives_the_fp32_labels_on_clips_it_was_not_calibrated_on(
    int8_path: Path, held_out: tuple[list[np.ndarray], list[str]]
) -> None:
    clips, truth = held_out
    fp32 = ClipModel.from_checkpoint(SHIPPED_MODEL, device="cpu", precision="fp32")
    int8 = ClipModel.from_checkpoint(SHIPPED_MODEL, precision="int8", int8_model=int8_path)
    assert int8.precision == "int8" and int8.card == fp32.card
    want = _top1(fp32.classify(clips))
    assert want == truth  # the fp32 model knows these clips, so agreement means something
    got = int8.classify(clips, with_embedding=True)
    assert _top1(got) == want
    assert len(got[0]["embedding"]) == int8.model.embedding_dim == 1280  # MobileNetV2's pooled width


def test_the_handler_serves_the_archives_int8_graph(
    int8_path: Path, held_out: tuple[list[np.ndarray], list[str]], tmp_path: Path
) -> None:
    from tests.model_store.test_handler import make_context, npy

    card = read_card(SHIPPED_MODEL)
    (tmp_path / CARD_FILE).write_text(json.dumps(card.to_dict()))
    (tmp_path / INT8_FILE).write_bytes(int8_path.read_bytes())
    context = make_context(tmp_path)
    context.model_yaml_config = {"precision": "int8"}
    handler = TSMHandler()
    handler.initialize(context)
    assert handler.clip_model.precision == "int8"
    clips, truth = held_out
    request = make_context(tmp_path, headers=[{} for _ in clips])
    outputs = handler.handle([{"body": npy(c)} for c in clips], request)
    assert [json.loads(o)["labels"][0]["label"] for o in outputs] == truth


def test_settings_select_int8_for_in_process_inference(int8_path: Path) -> None:
    settings = Settings(
        _env_file=None,  # type: ignore[call-arg]
        checkpoint_path=SHIPPED_MODEL,
        inference_precision="int8",
        int8_model_path=int8_path,
    )
    engine = InProcessEngine.from_settings(settings)
    assert engine.model.precision == "int8"
    assert isinstance(engine.model.model, Int8Network)
    with pytest.raises(ValidationError, match="TSMINDEX_INT8_MODEL_PATH"):
        Settings(_env_file=None, inference_precision="int8")  # type: ignore[call-arg]


def test_an_int8_archive_carries_the_graph_and_says_int8(int8_path: Path, tmp_path: Path) -> None:
    import zipfile

    model, card = load_model(SHIPPED_MODEL)
    with pytest.raises(ArchiveError, match="go together"):
        build_archive(model, card, tmp_path, precision="int8")
    archive = build_archive(model, card, tmp_path, precision="int8", int8_model=int8_path)
    assert read_manifest(archive)["model"]["handler"] == "handler.py"  # type: ignore[index]
    with zipfile.ZipFile(archive) as z:
        assert z.read(INT8_FILE) == int8_path.read_bytes()
        assert "model_store/int8.py" in z.namelist()
        assert z.read("model-config.yaml").decode() == "precision: int8\n"


def test_wrong_set_ups_fail_with_their_reason(tmp_path: Path) -> None:
    model, card = load_model(SHIPPED_MODEL)
    with pytest.raises(Int8Unavailable, match="no int8 model"):
        Int8Network(tmp_path / "missing.onnx")
    with pytest.raises(ValueError, match="goes with an Int8Network"):
        ClipModel(model, card, device="cpu", precision="int8")
    with pytest.raises(ValueError, match="needs the quantized model"):
        ClipModel.from_checkpoint(SHIPPED_MODEL, precision="int8")
    with pytest.raises(QuantizationError, match="no calibration clips"):
        quantize_int8(model, card, [], tmp_path / "x.onnx")
    with pytest.raises(QuantizationError, match="clip shape must be"):
        quantize_int8(model, card, [np.zeros((8, 16, 16, 3), np.uint8)], tmp_path / "x.onnx")
    assert not (tmp_path / "x.onnx").exists()


def test_quantize_without_usable_videos_exits_with_the_reason(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("not a video")
    args = ["model", "quantize", "--checkpoint", str(SHIPPED_MODEL), "--calibration", str(tmp_path)]
    result = CliRunner().invoke(app, [*args, "--out", str(tmp_path / "x.onnx")])
    assert result.exit_code == 2
    assert "no calibration clips" in result.output
    assert "skipped" in result.output and "notes.txt" in result.output
