"""Recognise a video container from its first bytes, so that an upload that is plainly not a video
is refused (415) before it is stored. A damaged video passes and fails its job with a reason."""

from __future__ import annotations

SNIFF_BYTES = 512

_ISO_BMFF_BOXES = {b"ftyp", b"moov", b"mdat", b"free", b"skip", b"wide", b"pnot"}


def looks_like_video(head: bytes) -> bool:
    if len(head) >= 8 and head[4:8] in _ISO_BMFF_BOXES:  # MP4, MOV, 3GP, M4V
        return True
    if head.startswith(b"\x1a\x45\xdf\xa3"):  # Matroska, WebM
        return True
    if head[:4] == b"RIFF" and head[8:12] in {b"AVI ", b"AVIX"}:
        return True
    if head.startswith((b"FLV", b"OggS", b"\x00\x00\x01\xba", b"\x00\x00\x01\xb3")):  # FLV, Ogg, MPEG-PS/ES
        return True
    if head.startswith(b"\x30\x26\xb2\x75\x8e\x66\xcf\x11"):  # ASF/WMV
        return True
    # MPEG transport stream: a sync byte every 188 bytes.
    return len(head) >= 377 and head[0] == head[188] == head[376] == 0x47
