"""A training run's checkpoint, written atomically beside its metrics.json (diagnose.files)."""

import io
import logging
from pathlib import Path
from typing import Any

from diagnose.errors import UserError
from diagnose.files import CHECKPOINT_FILE, replace_atomically


def log_into(run_dir: Path) -> None:
    """Send the log lines of this process (Hydra's file handler, <job>.log) to `run_dir`'s log of that name, appended:
    a resumed run's train.log goes on where the interrupted run's stopped."""
    root = logging.getLogger()
    for handler in [h for h in root.handlers if isinstance(h, logging.FileHandler)]:
        moved = logging.FileHandler(Path(run_dir) / Path(handler.baseFilename).name, mode="a")
        moved.setFormatter(handler.formatter)
        moved.setLevel(handler.level)
        root.removeHandler(handler)
        handler.close()
        root.addHandler(moved)


def save_checkpoint(out_dir: Path, state: dict[str, Any]) -> Path:
    path = out_dir / CHECKPOINT_FILE
    # serialised in memory first: torch.save writing straight to a full disk fails with a RuntimeError from its zip
    # writer ("unexpected pos"), a plain write fails with the OSError (ENOSPC) that says what is wrong
    import torch  # here, not above: reading metrics.json (`diagnose report`) needs no torch

    buffer = io.BytesIO()
    torch.save(state, buffer)
    replace_atomically(path, lambda f: f.write(buffer.getbuffer()))
    return path


def load_checkpoint(run_dir: Path) -> dict[str, Any]:
    """The checkpoint of a run folder, for `resume=`; a clear error when it is missing or unreadable."""
    path = Path(run_dir) / CHECKPOINT_FILE
    if not path.exists():
        raise UserError(f"resume={run_dir}: there is no {CHECKPOINT_FILE} in that folder. Give the folder of a "
                        f"run that was interrupted (outputs/<date>/<time>).")
    import torch

    try:
        state = torch.load(path, map_location="cpu", weights_only=True)  # no code runs from a user-given file
    except Exception as err:  # noqa: BLE001 - pickle/zip errors have many types; all mean "unreadable"
        raise UserError(f"resume={run_dir}: {CHECKPOINT_FILE} cannot be read ({type(err).__name__}: {err}). "
                        f"It is corrupt or not a diagnose checkpoint; start a new run instead.") from None
    missing = {"model", "optimizer", "scheduler", "step", "config", "record"} - set(state if isinstance(state, dict)
                                                                                     else ())
    if missing:
        raise UserError(f"resume={run_dir}: {CHECKPOINT_FILE} is not a diagnose checkpoint (it lacks "
                        f"{', '.join(sorted(missing))}); start a new run instead.")
    return state
