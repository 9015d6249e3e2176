"""Sizes that cannot fit, refused before allocating (diagnose/sizes.py): the needs counted against an MLP's own
arithmetic, and each refusal naming a size that fits."""

import math
import re

import pytest
import torch
from conftest import TINY, compose_config

from diagnose import sizes
from diagnose.build import build_model, build_run
from diagnose.errors import UserError
from diagnose.probe import probe


def mlp_sizes(n_in: int, width: int, depth: int, classes: int = 10) -> tuple[int, int]:
    """(weight bytes, bytes of every layer's output for one example) of the probe's MLP, by hand: `depth` blocks of
    a linear layer and an activation, `width` wide, then a linear head."""
    weights = n_in * width + width + (depth - 1) * (width * width + width) + width * classes + classes
    outputs = depth * 2 * width + classes
    return 4 * weights, 4 * outputs


@pytest.mark.parametrize("on_meta", [False, True])
def test_per_example_counts_an_mlps_weights_and_outputs_as_arithmetic_does(on_meta):
    config = compose_config(["model.depth=3", "model.width=7"], "probe")
    if on_meta:
        with torch.device("meta"):
            model = build_model(config, (1, 4, 4), 10)
    else:
        model = build_model(config, (1, 4, 4), 10)
    assert sizes.per_example(model, (1, 4, 4)) == mlp_sizes(16, 7, 3)


def test_per_example_leaves_the_weights_and_bn_statistics_as_they_were():
    config = compose_config(TINY)  # a CNN with BatchNorm, in training mode: a real forward would move its statistics
    model = build_model(config, (3, 8, 8), 10).train()
    before = {name: t.clone() for name, t in model.state_dict().items()}
    weights, outputs = sizes.per_example(model, (3, 8, 8))
    assert weights > 0 and outputs > 0
    assert all(torch.equal(before[name], t) for name, t in model.state_dict().items())


def test_free_bytes_of_the_cpu_is_linuxs_mem_available():
    import os

    with open("/proc/meminfo") as meminfo:
        available = next(int(line.split()[1]) for line in meminfo if line.startswith("MemAvailable:"))
    total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    free = sizes.free_bytes(torch.device("cpu"))
    assert 0 < free <= total and abs(free - available * 1024) < 2**30  # it moves a little between the two reads


def with_free(monkeypatch, free: int) -> None:
    monkeypatch.setattr(sizes, "free_bytes", lambda device: free)


@pytest.mark.parametrize(("overrides", "suggested"), [
    (["probe.batch=4096"], r"probe.batch=(\d+) would fit"),  # the batch's outputs are what does not fit
    (["probe.shape=[1,2048,2048]"], r"probe.shape=\[1,(\d+),\d+\] probe.batch=2 would fit"),  # the first layer
])
def test_a_probe_that_cannot_fit_is_refused_with_a_size_that_fits(overrides, suggested, monkeypatch, tmp_path):
    free = 2**27  # 128 MiB
    with_free(monkeypatch, free)
    config = compose_config(["model.depth=4", "model.width=2048", *overrides], "probe")
    with pytest.raises(UserError) as refused:
        probe(config, tmp_path)
    said = str(refused.value)
    assert "refused before allocating" in said and "128 MiB free" in said, said
    size = int(re.search(suggested, said).group(1))
    side = size if "shape" in suggested else 28
    batch = 2 if "shape" in suggested else size
    weights, outputs = mlp_sizes(side * side, 2048, 4)
    need = weights + batch * (side * side * 4 + outputs)
    assert 2 * need <= free  # what it names fits, with room for the backward
    assert not list(tmp_path.iterdir())  # refused before anything was written


def test_an_exact_jacobian_that_cannot_fit_is_refused_naming_moments(monkeypatch):
    config = compose_config(["model.depth=10", "model.width=100"], "probe")
    model, x = build_model(config, (1, 28, 28), 10), torch.randn(1, 28, 28)
    entries = 28 * 28 * 10 * 100  # J at every depth: the inputs times each block's outputs
    with_free(monkeypatch, entries * 4 - 1)  # one byte short of the Jacobians themselves
    with pytest.raises(UserError, match=f"probe.jacobian=exact .*784 inputs, {entries:,} entries.*probe.jacobian="
                                        f"moments measures"):
        sizes.check_exact_jacobian(model, x, "exact")
    sizes.check_exact_jacobian(model, x, "moments")  # moments: no J is made
    with_free(monkeypatch, entries * 4)
    sizes.check_exact_jacobian(model, x, "exact")


def test_the_probe_checks_its_exact_jacobian_before_computing_it(monkeypatch, tmp_path):
    with_free(monkeypatch, 2**20)  # 1 MiB: the batch fits, J at every depth (3.1 MB) does not
    config = compose_config(["model.depth=10", "model.width=100", "probe.jacobian=exact", "probe.batch=2"], "probe")
    with pytest.raises(UserError, match="probe.jacobian=exact"):
        probe(config, tmp_path)


def test_a_noise_batch_that_cannot_fit_is_refused_with_one_that_fits(monkeypatch):
    free = 2**24  # 16 MiB
    with_free(monkeypatch, free)
    config = compose_config([*TINY, "diag.noise_every=1", "diag.noise_batch=1048576", "diag.noise_max_batch=1048576"])
    from diagnose.training.loop import monitor_for

    run = build_run(config)
    with pytest.raises(UserError) as refused:
        monitor_for(run, writer=None, step_batch=[])
    said = str(refused.value)
    fits = int(re.search(r"diag.noise_batch=(\d+) would fit", said).group(1))
    weights, outputs = sizes.per_example(run.model, run.data.shape)
    example = math.prod(run.data.shape) * 4  # prepared as float32
    assert 2 * (weights + fits * example + fits // config.diag.noise_micro * outputs) <= free
    assert "diag.noise_batch=1048576" in said and "refused before allocating" in said


def test_a_probe_of_a_size_no_machine_holds_is_one_paragraph_naming_a_shape_that_fits(tmp_path):
    """The issue's case, at this machine's real free memory: it was an internal error ("can't allocate memory ...
    resume=") with a run folder; a UserError from the probe's job is exit 2 and no folder (test_cli.py)."""
    with pytest.raises(UserError) as refused:
        probe(compose_config(["probe.shape=[1,100000,100000]"], "probe"), tmp_path)
    assert re.fullmatch(r"probe.batch=256 of probe.shape=\[1, 100000, 100000\] .* refused before allocating. "
                        r"probe.shape=\[1,\d+,\d+\] probe.batch=2 would fit.", str(refused.value)), refused.value
    assert not list(tmp_path.iterdir())
