"""Build the TorchServe model archive (.mar) with torch-model-archiver.

The archive holds the weights in our checkpoint format (with their card), ``card.json``, the handler,
and the ``model_store`` inference code (``inference.py`` and the ``tsm`` package) as extra files, so
the server needs nothing from this repository. Build-time only: not shipped inside the archive.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path
from typing import Literal

from model_store.int8 import INT8_FILE
from model_store.tsm import TSM, ModelCard, save_checkpoint

PACKAGE_DIR = Path(__file__).resolve().parent
HANDLER_FILE = PACKAGE_DIR / "handler.py"
SHIPPED = ("__init__.py", "inference.py", "int8.py", "tsm")  # what the handler imports, nothing more
WEIGHTS_FILE = "weights.pt"
CARD_FILE = "card.json"  # read by model_store.handler
MODEL_CONFIG_FILE = "model-config.yaml"

Precision = Literal["auto", "fp32", "fp16", "bf16", "int8"]


class ArchiveError(RuntimeError):
    pass


def build_archive(
    model: TSM,
    card: ModelCard,
    out_dir: str | Path,
    *,
    model_name: str = "tsm",
    version: str | None = None,
    precision: Precision = "auto",
    int8_model: str | Path | None = None,
    compile: bool = False,
    timeout_s: float = 600.0,
) -> Path:
    """Write ``<out_dir>/<model_name>.mar`` (replacing it) and return its path.

    ``version`` (default: the card's) is the archive version TorchServe keys per-model settings on.
    ``precision`` goes into the archive's model config; "auto" lets the handler pick per device.
    Precision "int8" needs ``int8_model`` (``tsmindex model quantize``), which the handler serves.
    ``compile`` has the handler run the network through ``torch.compile``.
    """
    if (precision == "int8") != (int8_model is not None):
        raise ArchiveError("precision 'int8' and an int8 model go together")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="tsm-mar-") as tmp_name:
        tmp = Path(tmp_name)
        extra = tmp / "extra"
        package = extra / "model_store"
        package.mkdir(parents=True)
        for name in SHIPPED:
            source = PACKAGE_DIR / name
            if source.is_dir():
                shutil.copytree(source, package / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
            else:
                shutil.copy2(source, package / name)
        (extra / CARD_FILE).write_text(json.dumps(card.to_dict(), indent=2))
        if int8_model is not None:
            shutil.copy2(int8_model, extra / INT8_FILE)
        weights = tmp / WEIGHTS_FILE
        save_checkpoint(weights, model, card)
        # Only keys the handler reads: batch settings stay in config.properties, which an archive
        # value would silently override.
        config = f"precision: {precision}\n" + ("compile: true\n" if compile else "")
        (tmp / MODEL_CONFIG_FILE).write_text(config)
        command = [
            sys.executable,
            "-m",
            "model_archiver.model_packaging",
            "--model-name",
            model_name,
            "--version",
            version or card.version,
            "--serialized-file",
            str(weights),
            "--handler",
            str(HANDLER_FILE),
            "--extra-files",
            str(extra),
            "--config-file",
            str(tmp / MODEL_CONFIG_FILE),
            "--export-path",
            str(out_dir),
            "--force",
        ]
        # The archiver stages files in $TMPDIR/<model name>: a private TMPDIR keeps builds apart.
        env = {**os.environ, "TMPDIR": str(tmp)}
        result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=timeout_s)
        if result.returncode != 0:
            raise ArchiveError(f"torch-model-archiver failed ({result.returncode}): {result.stderr.strip()}")
    path = out_dir / f"{model_name}.mar"
    if not path.is_file():
        raise ArchiveError(f"torch-model-archiver wrote no {path}")
    return path


def read_manifest(archive: str | Path) -> dict[str, object]:
    """The archive's MAR-INF/MANIFEST.json."""
    with zipfile.ZipFile(archive) as z:
        data: dict[str, object] = json.loads(z.read("MAR-INF/MANIFEST.json"))
    return data


def read_served_model(archive: str | Path) -> tuple[str, str, ModelCard]:
    """The (name, version) TorchServe serves ``archive`` under, and the card inside it."""
    with zipfile.ZipFile(archive) as z:
        card = ModelCard.from_dict(json.loads(z.read(CARD_FILE)))
    model = read_manifest(archive).get("model")
    if not isinstance(model, dict):
        raise ArchiveError(f"{archive}: its manifest describes no model")
    return str(model.get("modelName", card.name)), str(model.get("modelVersion", card.version)), card
