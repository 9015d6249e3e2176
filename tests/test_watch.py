"""`diagnose.watch` on a plain PyTorch loop: the numbers of `diagnose train`, no call per step, no host sync on the
steps that measure nothing."""

import copy
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from conftest import TINY, compose_config
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

import diagnose
from diagnose.build import build_run
from diagnose.config import to_dict
from diagnose.errors import UserError
from diagnose.results import RunMetrics
from diagnose.tab.depth import depth_view
from diagnose.tab.findings import findings_view
from diagnose.tab.targets import RUN, scan
from diagnose.training.batches import batch_indices, training_batch
from diagnose.training.loop import train
from diagnose.watched import diag_settings

OVERRIDES = [*TINY, "steps=12", "diag.every=3", "diag.probe_every=4", "diag.hist_every=6", "act=tanh"]


def plain_loop(run, steps: int) -> None:
    """What a user writes: a forward, a backward and a step per batch, nothing of diagnose's."""
    generator = torch.Generator().manual_seed(run.seed)
    for _, idx in zip(range(steps), batch_indices(run, 0), strict=False):
        x, y = training_batch(run, idx, generator)
        loss = run.loss_fn(run.model(x), y)
        run.optimizer.zero_grad()
        loss.backward()
        run.optimizer.step()
        run.scheduler.step()


def scalars(folder) -> dict[str, list[tuple[int, float]]]:
    events = EventAccumulator(str(folder), size_guidance={"scalars": 0}).Reload()
    return {tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]}


@pytest.fixture(scope="module")
def both(tmp_path_factory):
    """The same model, seed, data and steps: trained by `diagnose train`, and by a plain loop under watch."""
    folder = tmp_path_factory.mktemp("watch")
    cfg = compose_config(OVERRIDES)
    trained = train(build_run(cfg), folder / "train", to_dict(cfg))
    run = build_run(cfg)  # the same seed: the same initial weights
    probe = run.prepare(run.data.val_x[:cfg.diag.probe_size])  # train's probe: held-out examples
    with diagnose.watch(run.model, run.optimizer, folder / "watch", probe=probe, diag=cfg.diag,
                        steps=run.total_steps) as watch:
        plain_loop(run, run.total_steps)
    return folder, trained, watch.metrics


def test_a_plain_loop_under_watch_gives_the_per_layer_numbers_of_diagnose_train(both):
    folder, trained, watched = both
    assert watched.status == "completed" and watched.steps == trained.steps == 12
    assert list(watched.layers) == list(trained.layers) and len(trained.layers) >= 6
    assert watched.layers == trained.layers  # every metric of every layer, bit for bit
    assert watched.layer_history == trained.layer_history and watched.dead_history == trained.dead_history
    assert watched.run_means == trained.run_means and watched.run_means
    assert any("saturation" in record.values for record in watched.layers.values())  # tanh's, found by type
    # the event files: every per-layer series the same, at the same steps
    train_events, watch_events = scalars(folder / "train"), scalars(folder / "watch")
    per_layer = [tag for tag in train_events if tag.split("/")[0] in {"act_std", "grad_norm", "update_ratio", "dead",
                                                                       "saturation", "weight_std"}]
    assert len(per_layer) > 10
    for tag in per_layer:
        assert watch_events[tag] == train_events[tag], tag


def test_watch_in_a_with_block_writes_metrics_and_findings(both):
    folder, _, watched = both
    saved = RunMetrics.from_json(json.loads((folder / "watch" / "metrics.json").read_text()))
    assert saved == watched and saved.findings
    assert saved.config["model"] == {"name": "target"}  # the user's network: remedies in its terms
    kinds = {(record.role, record.kind) for record in saved.layers.values()}
    assert ("act", "saturating") in kinds and ("norm", "batch") in kinds  # tanh and BN, found by discovery
    closing = saved.findings[-1].message
    assert "not measured" in closing and "accuracy above chance" in closing  # no loss or accuracy was given
    tensors = EventAccumulator(str(folder / "watch")).Reload().Tags()["tensors"]
    assert {"findings/text_summary", "custom_scalars__config__"} <= set(tensors)  # the findings and the dashboards


def test_the_tab_shows_a_watched_loop_as_it_shows_the_trained_run(both):
    from test_tab import in_process  # TensorBoard's data provider, without a server

    folder = both[0]
    found, events = scan(folder).targets, in_process(folder)
    assert found["watch"].kind == found["train"].kind == RUN
    watched, trained = depth_view(found["watch"], events).profile, depth_view(found["train"], events).profile
    assert watched.steps == trained.steps and len(watched.panels) == 3
    assert watched.panels == trained.panels  # every layer's line, at every measured step
    assert findings_view(found["watch"]).own == both[2].findings


def test_a_watched_step_that_measures_nothing_reads_nothing_back(monkeypatch, tmp_path):
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    x, y = torch.randn(16, 4), torch.randint(0, 3, (16,))
    reads = []
    for name in ("item", "tolist", "cpu"):
        original = getattr(torch.Tensor, name)

        def counted(self, *args, _original=original, _name=name, **kwargs):
            reads.append(_name)
            return _original(self, *args, **kwargs)

        monkeypatch.setattr(torch.Tensor, name, counted)
    watch = diagnose.watch(model, optimizer, tmp_path, diag="off", every=5)
    per_step = []
    for _ in range(10):
        before = len(reads)
        optimizer.zero_grad()
        F.cross_entropy(model(x), y).backward()
        optimizer.step()
        per_step.append(len(reads) - before)
    monkeypatch.undo()
    watch.close()
    assert watch.step == 10
    measuring = {1, 5, 10}  # the first step, then every 5th
    assert all(per_step[step - 1] == 0 for step in range(1, 11) if step not in measuring), per_step
    assert all(per_step[step - 1] > 0 for step in measuring), per_step  # the counter sees a measuring step's reads


def test_the_opt_in_instruments_run_on_a_loss_and_a_batch_source(tmp_path):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(6, 16), torch.nn.ReLU(), torch.nn.Linear(16, 3))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    data_x, data_y = torch.randn(512, 6), torch.randint(0, 3, (512,))
    loader = [(data_x[i:i + 64], data_y[i:i + 64]) for i in range(0, 512, 64)]  # a source of its own
    diag = diag_settings("default", every=2)
    diag = type(diag)(**{**vars(diag), "noise_every": 3, "noise_batch": 128, "noise_micro": 16,
                         "noise_max_batch": 256, "curvature_every": 3, "curvature_batch": 64})
    with diagnose.watch(model, optimizer, tmp_path, loss_fn=F.cross_entropy, batches=loader, diag=diag,
                        steps=6) as watch:
        accs = []
        for step in range(6):
            x, y = loader[step]
            logits = model(x)
            loss = F.cross_entropy(logits, y)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            accs.append((logits.argmax(dim=1) == y).float().mean())
            watch.log(loss=loss, acc=accs[-1])
    metrics = watch.metrics
    assert metrics.final.train_acc == pytest.approx(torch.stack(accs).mean().item())  # one window of 6 steps
    # 6 steps: at least FEWEST_POINTS=3 measurements, every 2 steps where noise_every=3 would give fewer
    assert metrics.noise is not None and [s for s, *_ in metrics.noise.history] == [2, 4, 6]
    assert metrics.curvature is not None and [s for s, *_ in metrics.curvature.history] == [2, 4, 6]
    assert all(threshold == pytest.approx(2 * 1.9 / 0.05) for *_, threshold in metrics.curvature.history)
    assert metrics.train_curve and metrics.final.train_loss == pytest.approx(metrics.train_curve[-1][1])
    closing = metrics.findings[-1].message
    assert "batch vs noise scale" not in closing.split("not measured")[-1]  # measured: judged, not missing
    tags = scalars(tmp_path)
    assert {"noise/b_simple", "curvature/lambda_max", "train/loss"} <= set(tags)


def test_a_bad_preset_is_a_clear_error():
    with pytest.raises(UserError, match="diag='fast' is not a preset.*default, full, off"):
        diag_settings("fast")


def test_import_diagnose_stays_cheap():
    code = "import sys, diagnose; print('torch' in sys.modules, 'hydra' in sys.modules, callable(diagnose.watch))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["False", "False", "True"]


def test_the_readme_example_runs_and_measures_its_layers(tmp_path, monkeypatch):
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    example = readme.split("<!-- watch-example -->\n```\n")[1].split("```")[0]
    assert "range(300)" in example
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(example.replace("300", "6"), namespace)  # shrunk: 6 steps
    metrics = namespace["watch"].metrics
    assert metrics.status == "completed" and metrics.steps == 6 and metrics.train_curve
    roles = {name: record.role for name, record in metrics.layers.items()}
    assert roles == {"0.conv": "weight", "0.norm": "norm", "0.act": "act", "2.conv": "weight", "2.norm": "norm",
                     "2.act": "act", "5": "weight"}
    assert "dead" in metrics.layers["0.act"].values  # the probe ran: ReLUs, found by type
    assert (tmp_path / "runs" / "mine" / "metrics.json").exists()


def small_net():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3))


def test_a_diverging_loop_is_said_to_have_diverged_at_its_first_non_finite_step(tmp_path):
    x, y = torch.randn(16, 4), torch.randint(0, 3, (16,))

    def loop(model, optimizer) -> int | None:
        """The step whose logits first overflow, None if none does; it goes on training, as a loop that does not
        look."""
        first = None
        for step in range(1, 5):
            logits = model(x)
            if first is None and not torch.isfinite(logits).all():
                first = step
            optimizer.zero_grad()
            F.cross_entropy(logits, y).backward()
            optimizer.step()
        return first

    model = small_net()
    twin = copy.deepcopy(model)  # the same loop unwatched
    expected = loop(twin, torch.optim.SGD(twin.parameters(), lr=1e30))  # the first update overflows the weights
    optimizer = torch.optim.SGD(model.parameters(), lr=1e30)
    with diagnose.watch(model, optimizer, tmp_path, every=1):
        loop(model, optimizer)
    metrics = RunMetrics.from_json(json.loads((tmp_path / "metrics.json").read_text()))
    assert metrics.status == "diverged" and metrics.nonfinite.step == expected == 2
    assert metrics.findings[0].rule == "divergence" and metrics.findings[0].severity == "error"


def test_an_error_in_the_loop_leaves_metrics_with_status_failed_and_goes_on_up(tmp_path):
    model = small_net()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(RuntimeError, match="shapes"), diagnose.watch(model, optimizer, tmp_path) as watch:
        model(torch.randn(2, 5))  # the wrong input width: the loop's own bug
    saved = json.loads((tmp_path / "metrics.json").read_text())
    assert saved["status"] == "failed" and "RuntimeError" in saved["error"] and watch.metrics.steps == 0
    assert not model._forward_pre_hooks and not optimizer._optimizer_step_pre_hooks  # detached


def test_a_network_and_an_activation_diagnose_has_never_seen_are_diagnosed_in_a_plain_loop(tmp_path, capsys):
    """The user's residual CNN (tests/fixtures/yournets) with its own clamp activation, saturated by a wide init:
    its layers are found by running it (the skip connection included), the clamp classified as saturating by
    measuring it, and the findings name the saturation in the user's terms."""
    sys.path.insert(0, str(Path(__file__).parent / "fixtures"))
    from yournets.nets import FunctionalNet, ResNet

    torch.manual_seed(0)
    model = ResNet((1, 8, 8), 10, width=8, blocks=1, act="clamp")
    for module in model.modules():
        if isinstance(module, torch.nn.Conv2d):
            torch.nn.init.normal_(module.weight, std=2.0)  # pushes the clamp into its flat tails
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    x, y = torch.randn(96, 1, 8, 8), torch.randint(0, 10, (96,))
    with diagnose.watch(model, optimizer, tmp_path / "mine", probe=x[:32], diag="default", every=2,
                        steps=8) as watch:
        for step in range(8):
            i = torch.arange(step * 8, step * 8 + 8) % 64 + 32
            loss = F.cross_entropy(model(x[i]), y[i])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            watch.log(loss=loss)
    metrics = watch.metrics
    acts = {name: record for name, record in metrics.layers.items() if record.role == "act"}
    assert set(acts) == {"stem_act", "blocks.0.act1", "blocks.0.act2"}  # in the order they run
    assert all(record.kind == "saturating" for record in acts.values())  # the clamp, measured
    norms = {name: record.kind for name, record in metrics.layers.items() if record.role == "norm"}
    assert norms == {"blocks.0.norm1": "batch", "blocks.0.norm2": "example"}  # BN by type, PixelNorm measured
    saturation = next(f for f in metrics.findings if f.rule == "saturation")
    assert "your model" in saturation.remedy and "init=" not in saturation.remedy  # the user's terms
    assert max(r.values["saturation"] for r in acts.values()) > 0.5

    functional = FunctionalNet((1, 8, 8), 10)
    optimizer = torch.optim.SGD(functional.parameters(), lr=0.01)
    with diagnose.watch(functional, optimizer, tmp_path / "functional", diag="default", steps=2):
        for _ in range(2):
            loss = F.cross_entropy(functional(x[:8]), y[:8])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    said = capsys.readouterr()
    unseen = [line for line in (said.out + said.err).splitlines() if "as a function inside forward()" in line]
    assert len(unseen) == 1 and "relu" in unseen[0] and "fc1, fc2" in unseen[0]  # once, naming the layers measured
