"""``workers.media`` stays light: the API and fetch-only workers import it without torch."""

from __future__ import annotations

import subprocess
import sys


def test_importing_media_does_not_import_torch() -> None:
    code = "import sys, workers.media, workers.media.synth; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
