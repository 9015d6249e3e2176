"""Every command README.md shows keeps working: the lecture tour runs shrunk, the others at least compose."""

import json
import re
import sys
from pathlib import Path

import pytest
from conftest import compose_raw, needs_fashion, run_cli
from findings_check import contradictions
from omegaconf import OmegaConf

from diagnose.cli.overrides import check_command_line, with_targets

README = (Path(__file__).resolve().parent.parent / "README.md").read_text()


def shell_blocks(text: str) -> list[str]:
    """The fenced code blocks of `text` with no language or a shell's (a ```python block is not a command line)."""
    blocks, block, language = [], None, ""
    for line in text.splitlines():
        if not line.startswith("```"):
            if block is not None:
                block.append(line)
        elif block is None:
            block, language = [], line[3:].strip()
        else:
            if language in ("", "bash", "sh", "console"):
                blocks.append("\n".join(block) + "\n")
            block = None
    return blocks


def commands(text: str) -> list[str]:
    """`diagnose ...` lines of the fenced code blocks in `text`, continuation lines joined."""
    blocks = shell_blocks(text)
    joined = [line for block in blocks for line in block.replace("\\\n", " ").splitlines()]
    return [line.split("  #")[0].strip() for line in joined if line.startswith("diagnose ")]


TOUR = commands(README.split("<!-- tour -->")[1].split("<!-- /tour -->")[0])
SHRINK = {
    "train": {"steps": "3", "data.subset": "256", "data.val_size": "128", "data.test_subset": "256", "device": "cpu",
              "log_every": "1",
              "diag.probe_every": "2", "diag.landscape_every": "2"},
    "probe": {"model.depth": "4", "model.width": "32", "probe.batch": "32", "device": "cpu"},
}


def shrunk(command: str) -> list[str]:
    """The command's arguments with the keys of SHRINK replaced: a few steps on a little data, and a sweep over
    its first two values of each key (every option's own tests are in test_components)."""
    args = [_first_two(a.strip("'")) for a in command.split()[1:]]
    shrink = SHRINK[args[0]]
    if args[0] == "train" and not any(a.startswith("diag.landscape=") for a in args):
        shrink = {k: v for k, v in shrink.items() if k != "diag.landscape_every"}
    kept = [a for a in args if a.split("=")[0] not in shrink]
    return kept + [f"{k}={v}" for k, v in shrink.items()]


def _first_two(arg: str) -> str:
    key, _, values = arg.partition("=")
    if "," not in values or "[" in values or "(" in values:
        return arg
    return f"{key}={','.join(values.split(',')[:2])}"


def test_the_tour_has_a_command_for_every_phenomenon():
    assert len(TOUR) >= 13
    for topic in ("init=zeros", "lr=0.05", "norm=bn,gn batch=2,32", "clip=value,norm", "downsample=maxpool,strided",
                  "data.center=false,true", "diag.landscape=true", "loss=ce,mse"):
        assert any(topic in c for c in TOUR), topic


@pytest.mark.slow
@pytest.mark.parametrize("command", TOUR)
def test_tour_command_runs_shrunk(command, tmp_path):
    if "fashion_mnist" in command:
        needs_fashion()
    result = run_cli(shrunk(command), tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = list(tmp_path.glob("outputs/**/metrics.json"))
    jobs = 1
    for arg in shrunk(command):
        if "," in arg and "=" in arg and "[" not in arg:
            jobs *= len(arg.split("=", 1)[1].split(","))
    assert len(metrics) == jobs
    for path in metrics:  # a sweep goes on past a failed job: each job must have finished
        assert json.loads(path.read_text())["status"] == "completed", path
        assert not contradictions(path.parent), path  # no finding says what its own numbers do not show


def one_job(command: str) -> tuple[str, list[str]]:
    """The command's config name and the overrides of its first job (a sweep's first value; a search
    interval's lower end)."""
    args = [a.strip("'") for a in command.split()[1:] if a != "-m"]
    first = [re.sub(r"interval\(([^,]+),.*\)", r"\1", a).split(",")[0] for a in args[1:]]
    return args[0], with_targets(first)  # as the CLI spells a `_target_` for Hydra


def users_file(name: str) -> str:
    """The file a user writes that README shows in a code block starting `# <name>`."""
    return next(block for block in shell_blocks(README) if block.startswith(f"# {name}\n"))


@pytest.mark.parametrize("command", [c for c in commands(README) if c not in TOUR])
def test_every_other_command_composes_and_validates(command, tmp_path, monkeypatch):
    if "_target_=mynets." in command:  # the user's file, where they run it: README's own
        (tmp_path / "mynets.py").write_text(users_file("mynets.py"))
        monkeypatch.chdir(tmp_path)
        monkeypatch.syspath_prepend(str(tmp_path))
        monkeypatch.delitem(sys.modules, "mynets", raising=False)
    config_name, overrides = one_job(command)
    assert config_name in ("train", "check"), command  # report has its own tests
    check_command_line(config_name, overrides)  # what the CLI checks before anything runs
    cfg = compose_raw(overrides, config_name)
    OmegaConf.to_object(OmegaConf.masked_copy(cfg, [k for k in cfg if k != "hydra"]))  # the schema's checks
    for override in overrides:  # nothing silently dropped
        key, value = override.lstrip("+").split("=", 1)
        if "/" not in key:
            assert str(OmegaConf.select(cfg, key)) == value or cfg[key].name == value, override


def test_the_slurm_example_composes(tmp_path):
    slurm = next(c for c in commands(README) if "submitit_slurm" in c)  # the GPU cluster's (then the local one's)
    # without SLURM it cannot launch; --cfg hydra composes the config it would launch with (one job's values)
    args = [a if "," not in a else a.split(",")[0] for a in slurm.split()[1:] if a != "-m"]
    result = run_cli([*args, "--cfg", "hydra"], tmp_path)
    assert result.returncode == 0, result.stderr
    assert "partition: gpu" in result.stdout and "array_parallelism: 10" in result.stdout


def within_last_digit(shown: str, printed: str) -> bool:
    """The same text, and each number within one unit of its last shown digit (a loss's float32 sums may round the
    other way on another machine or thread count; an accuracy over 1,000 or 2,000 examples cannot differ so little)."""
    number = r"-?\d[\d,]*(?:\.\d+)?"
    if re.split(number, shown) != re.split(number, printed):
        return False
    for a, b in zip(re.findall(number, shown), re.findall(number, printed), strict=True):
        unit = 10 ** -len(a.partition(".")[2])
        if abs(float(a.replace(",", "")) - float(b.replace(",", ""))) > unit * 1.01:
            return False
    return True


@pytest.mark.slow(seconds=17)
def test_the_first_command_prints_what_readme_shows(tmp_path):
    """`diagnose train`, as *Set up and run* shows a newcomer: the default CNN for two epochs on the shipped sample,
    its data line, validations, findings and results table as README prints them (79.5 % test accuracy), on the one
    thread README's run had (threads=auto picks among 1 and OMP_NUM_THREADS; two threads round differently)."""
    shown = README.split("What a newcomer sees")[1].split("```")[1].strip().splitlines()
    result = run_cli(["train"], tmp_path, env={"OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stderr
    printed = [line.strip() for line in (result.stderr + result.stdout).splitlines()
               if line.strip() and "img/s" not in line]  # the log windows' lines, which README leaves out
    timing = re.compile(r"^(\d+ steps in )[\d.]+ s, [\d,]+ images/s\. Run folder: .*$")
    for line in shown:
        line = line.strip()
        if timing.match(line):
            assert any(timing.match(p) and p.startswith(timing.match(line)[1]) for p in printed), printed
        else:
            assert any(within_last_digit(line, p) for p in printed), (line, printed)
