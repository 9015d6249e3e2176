"""What a run leaves in its folder: metrics.json and a checkpoint, each written atomically."""

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import torch

METRICS_FILE = "metrics.json"
CHECKPOINT_FILE = "checkpoint.pt"


def _replace_atomically(path: Path, write: Any) -> None:
    """Write through a temp file in the same folder, then rename: a crash never leaves half a file."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_metrics(out_dir: Path, metrics: dict[str, Any]) -> Path:
    path = out_dir / METRICS_FILE
    _replace_atomically(path, lambda f: f.write(json.dumps(metrics, indent=2).encode()))
    return path


def read_metrics(run_dir: Path) -> dict[str, Any]:
    return json.loads((run_dir / METRICS_FILE).read_text())


def save_checkpoint(out_dir: Path, state: dict[str, Any]) -> Path:
    path = out_dir / CHECKPOINT_FILE
    _replace_atomically(path, lambda f: torch.save(state, f))
    return path
