"""The `diagnose` command line, the only layer that imports Hydra: `commands` dispatches a subcommand,
`overrides` reads and checks the command line, `jobs` runs one Hydra job, `callbacks` sums a sweep up."""

from functools import cache
from pathlib import Path


def config_dir() -> Path:
    """The configs: packaged inside the wheel, else the repository's top-level conf/ (editable install)."""
    packaged = Path(__file__).parent.parent / "conf"
    return packaged if packaged.is_dir() else Path(__file__).resolve().parents[2] / "conf"


def run_name(overrides: str) -> str:
    """The suffix of a single run's folder: its overrides (`_act=sigmoid,norm=none`), so TensorBoard's run list
    says which run is which; folder-safe and short enough for a file name."""
    if not overrides:
        return ""
    name = overrides.replace("/", "_")
    return "_" + (name if len(name) <= 120 else name[:117] + "...")


def free(path: str) -> str:
    """`path`, or `path-2`, `path-3`, ... where it is taken: runs started in the same second (with the same overrides)
    get folders of their own. Cached (use_cache), so that each resolution of one config gives the same folder."""
    candidate, n = path, 1
    while Path(candidate).exists():
        n += 1
        candidate = f"{path}-{n}"
    return candidate


@cache
def hand_the_schema_to_hydra() -> None:
    """The yaml files extend the schema's nodes: they must exist before any composition (diagnose.cli.overrides
    calls this when imported). Not at this package's import: `diagnose report` composes nothing."""
    from omegaconf import OmegaConf

    from diagnose.cli.schema import register

    register()
    OmegaConf.register_new_resolver("diagnose_run_name", run_name, replace=True)
    OmegaConf.register_new_resolver("diagnose_free", free, replace=True, use_cache=True)
