"""The `diagnose` command line, the only layer that imports Hydra: `commands` dispatches a subcommand,
`overrides` reads and checks the command line, `jobs` runs one Hydra job, `callbacks` sums a sweep up."""

from pathlib import Path


def config_dir() -> Path:
    """The configs: packaged inside the wheel, else the repository's top-level conf/ (editable install)."""
    packaged = Path(__file__).parent.parent / "conf"
    return packaged if packaged.is_dir() else Path(__file__).resolve().parents[2] / "conf"
