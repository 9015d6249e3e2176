"""The `diagnose` command line, the only layer that imports Hydra: `commands` dispatches a subcommand,
`overrides` reads and checks the command line, `jobs` runs one Hydra job, `callbacks` sums a sweep up."""

from pathlib import Path


def config_dir() -> Path:
    """The configs: packaged inside the wheel, else the repository's top-level conf/ (editable install)."""
    packaged = Path(__file__).parent.parent / "conf"
    return packaged if packaged.is_dir() else Path(__file__).resolve().parents[2] / "conf"


def _hand_the_schema_to_hydra() -> None:
    from diagnose.cli.schema import register

    register()


_hand_the_schema_to_hydra()  # the yaml files extend the schema's nodes: they must exist before any composition
