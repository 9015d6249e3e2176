"""Hand the config schema (diagnose/config.py and the registries' options) to Hydra's ConfigStore: each yaml file
extends its schema node, `/schema/<group>/<option>`, so Hydra checks it and every override against the types."""

from hydra.core.config_store import ConfigStore

from diagnose.cli import config_dir
from diagnose.config import COMMANDS, PRESETS, schemas


def register() -> None:
    store = ConfigStore.instance()
    for command, schema in COMMANDS.items():
        store.store(group="schema", name=command, node=schema)
    presets = {group: {path.stem: schema for path in (config_dir() / group).glob("*.yaml")}
               for group, schema in PRESETS.items()}
    for group, options in {**schemas(), **presets}.items():
        for name, schema in options.items():
            store.store(group=f"schema/{group}", name=name, node=schema(name=name))
