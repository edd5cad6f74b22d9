"""``build_tsm``: the keyword-only builder for every mode of the network."""

from __future__ import annotations

from typing import Literal, overload

from model_store.tsm.config import TSMConfig
from model_store.tsm.network import TSM
from model_store.tsm.online import OnlineTSM

MODES = ("offline", "causal", "online")


@overload
def build_tsm(
    arch: str,
    *,
    num_classes: int,
    num_segments: int = ...,
    shift_div: int = ...,
    shift_place: str = ...,
    mode: Literal["offline", "causal"] = ...,
    dropout: float = ...,
) -> TSM: ...


@overload
def build_tsm(
    arch: str,
    *,
    num_classes: int,
    num_segments: int = ...,
    shift_div: int = ...,
    shift_place: str = ...,
    mode: Literal["online"],
    dropout: float = ...,
) -> OnlineTSM: ...


def build_tsm(
    arch: str,
    *,
    num_classes: int,
    num_segments: int = 8,
    shift_div: int = 8,
    shift_place: str = "blockres",
    mode: str = "offline",
    dropout: float = 0.5,
) -> TSM | OnlineTSM:
    """A randomly initialised TSM network; load weights with ``load_checkpoint``.

    ``mode``: "offline" shifts both ways over a whole clip (the paper's network); "causal" shifts
    from the past only, over a whole clip; "online" takes one frame at a time (``OnlineTSM``) and
    computes what "causal" computes. All three share one state-dict layout.
    """
    config = TSMConfig(
        arch=arch,
        num_classes=num_classes,
        num_segments=num_segments,
        shift_div=shift_div,
        shift_place=shift_place,
        dropout=dropout,
        causal=mode != "offline",
    )
    if mode == "online":
        return OnlineTSM(config)
    if mode not in MODES:
        raise ValueError(f"unknown mode {mode!r}; expected one of {MODES}")
    return TSM(config)
