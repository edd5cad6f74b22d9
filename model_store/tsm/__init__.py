"""The TSM network (Lin, Gan & Han, ICCV 2019), its checkpoints, online mode and inference paths."""

from model_store.tsm.build import build_tsm
from model_store.tsm.checkpoint import (
    CheckpointError,
    CheckpointInfo,
    OfficialName,
    load_checkpoint,
    load_model,
    parse_official_filename,
    read_card,
    save_checkpoint,
)
from model_store.tsm.config import (
    KINETICS400_LABELS_PATH,
    ModelCard,
    Preprocess,
    TSMConfig,
    read_labels,
)
from model_store.tsm.export import (
    InferenceRunner,
    cpu_supports_bf16,
    export_onnx,
    export_torchscript,
    prepare_for_inference,
    select_dtype,
)
from model_store.tsm.network import TSM, build_from_card
from model_store.tsm.online import CacheSize, OnlineTSM, Stream
from model_store.tsm.shift import TemporalShift, temporal_shift

__all__ = [
    "KINETICS400_LABELS_PATH",
    "TSM",
    "CacheSize",
    "CheckpointError",
    "CheckpointInfo",
    "InferenceRunner",
    "ModelCard",
    "OfficialName",
    "OnlineTSM",
    "Preprocess",
    "Stream",
    "TSMConfig",
    "TemporalShift",
    "build_from_card",
    "build_tsm",
    "cpu_supports_bf16",
    "export_onnx",
    "export_torchscript",
    "load_checkpoint",
    "load_model",
    "parse_official_filename",
    "prepare_for_inference",
    "read_card",
    "read_labels",
    "save_checkpoint",
    "select_dtype",
    "temporal_shift",
]
