"""Hand the config schema (diagnose/config.py and the registries' options) to Hydra's ConfigStore: each yaml file
extends its schema node, `/schema/<group>/<option>`, so Hydra checks it and every override against the types."""

from dataclasses import dataclass

from hydra._internal.core_plugins.basic_sweeper import BasicSweeperConf
from hydra.core.config_store import ConfigStore

from diagnose.cli import config_dir
from diagnose.config import COMMANDS, PRESETS, schemas


@dataclass
class LocalLauncherConf:
    """`hydra/launcher=local`: jobs side by side on this machine (hydra_plugins/diagnose_launcher)."""

    _target_: str = "hydra_plugins.diagnose_launcher.LocalLauncher"
    workers: int = 0  # jobs at a time; 0: one per core, or workers_per_device per GPU where there are GPUs
    workers_per_device: int = 4  # jobs sharing one GPU: a tiny net leaves most of a GPU idle


LAUNCHER_LEAST = {"workers": 0, "workers_per_device": 1}  # the least each of its settings takes


@dataclass
class CheckedSweeperConf(BasicSweeperConf):
    """`hydra/sweeper=diagnose`, the default: Hydra's basic sweeper, less its second check of each job
    (hydra_plugins/diagnose_sweeper); the same settings."""

    _target_: str = "hydra_plugins.diagnose_sweeper.CheckedSweeper"


def register() -> None:
    store = ConfigStore.instance()
    store.store(group="hydra/launcher", name="local", node=LocalLauncherConf, provider="diagnose")
    store.store(group="hydra/sweeper", name="diagnose", node=CheckedSweeperConf, provider="diagnose")
    for command, schema in COMMANDS.items():
        store.store(group="schema", name=command, node=schema)
    presets = {group: {path.stem: schema for path in (config_dir() / group).glob("*.yaml")}
               for group, schema in PRESETS.items()}
    for group, options in {**schemas(), **presets}.items():
        for name, schema in options.items():
            store.store(group=f"schema/{group}", name=name, node=schema(name=name))
