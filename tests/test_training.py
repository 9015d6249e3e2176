"""The training loop, run in-process on tiny configs."""

import json
import time
from pathlib import Path

import pytest
import torch
from conftest import TINY, compose_config
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from diagnose import build
from diagnose.build import build_run, pick_device
from diagnose.config import to_dict
from diagnose.results import RunMetrics
from diagnose.training.loop import train
from diagnose.training.nonfinite import NonFiniteLoss


def run_tiny(cfg, out_dir: Path) -> RunMetrics:
    out_dir.mkdir(parents=True, exist_ok=True)
    return train(build_run(cfg), out_dir, to_dict(cfg))


def test_run_writes_events_metrics_and_checkpoint(cfg_factory, tmp_path):
    metrics = run_tiny(cfg_factory("steps=6"), tmp_path)
    assert metrics.status == "completed" and metrics.steps == 6
    saved = json.loads((tmp_path / "metrics.json").read_text())
    assert saved["final"] == metrics.to_json()["final"] and RunMetrics.from_json(saved) == metrics
    assert set(saved["final"]) == {"train_loss", "train_acc", "val_loss", "val_acc", "test_loss", "test_acc"}
    events = EventAccumulator(str(tmp_path)).Reload()
    scalars = set(events.Tags()["scalars"])
    assert {"train/loss", "train/acc", "train/lr", "val/loss", "val/acc", "test/loss", "test/acc",
            "perf/images_per_s"} <= scalars
    for tag in ("train/loss", "train/acc"):
        assert [e.step for e in events.Scalars(tag)] == [1, 2, 3, 4, 5, 6]  # a short run: every step for 20 points
    assert events.Scalars("train/loss")[-1].value == pytest.approx(metrics.final.train_loss)
    assert "config/text_summary" in events.Tags()["tensors"]
    checkpoint = torch.load(tmp_path / "checkpoint.pt", weights_only=False)
    assert checkpoint["step"] == 6 and checkpoint["config"]["batch"] == 16
    assert set(checkpoint) >= {"model", "optimizer", "scheduler", "step", "config"}


def test_same_seed_gives_identical_numbers_on_the_cpu(cfg_factory, tmp_path):
    cfg = cfg_factory("steps=8", "data.augment=true", "model.dropout=0.2")
    first, second = run_tiny(cfg, tmp_path / "a"), run_tiny(cfg, tmp_path / "b")
    assert first.final == second.final and first.history == second.history
    other_seed = run_tiny(cfg_factory("steps=8", "data.augment=true", "model.dropout=0.2", "seed=1"), tmp_path / "c")
    assert other_seed.final != first.final


def test_same_seed_logs_the_same_scalars(cfg_factory, tmp_path):
    cfg = cfg_factory("steps=12", "diag.every=3", "diag.probe_every=4", "data.augment=true", "model.dropout=0.2")
    run_tiny(cfg, tmp_path / "a")
    run_tiny(cfg, tmp_path / "b")
    first, second = (EventAccumulator(str(tmp_path / d)).Reload() for d in ("a", "b"))
    tags = [t for t in first.Tags()["scalars"] if not t.startswith("perf/")]  # throughput is the clock's
    assert set(tags) <= set(second.Tags()["scalars"]) and len(tags) > 50
    for tag in tags:
        assert [(e.step, e.value) for e in first.Scalars(tag)] == [(e.step, e.value) for e in second.Scalars(tag)], tag


def test_epochs_mode_evaluates_every_epoch(cfg_factory, tmp_path):
    metrics = run_tiny(cfg_factory("steps=null", "epochs=2", "batch=64"), tmp_path)
    # 256 - 64 validation = 192 training examples -> 3 steps per epoch
    assert metrics.steps == 6
    assert [h.step for h in metrics.history] == [3, 6]


def test_training_learns_the_synthetic_data(tmp_path):
    cfg = compose_config(["data=synthetic", "device=cpu", "data.train_count=2000", "epochs=3", "batch=32", "lr=0.2",
                          "model.widths=[16,32]"])
    metrics = run_tiny(cfg, tmp_path)
    assert metrics.final.test_acc > 0.6  # 10 classes: chance is 0.1


def test_a_diverging_run_stops_and_says_so(cfg_factory, tmp_path):
    metrics = run_tiny(cfg_factory("lr=1e12", "norm=none", "steps=20", "optim.momentum=0.0"), tmp_path)
    assert metrics.status == "diverged"
    assert metrics.steps < 20
    assert metrics.final.test_acc is None
    assert json.loads((tmp_path / "metrics.json").read_text())["status"] == "diverged"


def test_a_second_ctrl_c_mid_step_still_writes_metrics_but_no_half_made_checkpoint(cfg_factory, tmp_path):
    run = build_run(cfg_factory("steps=10"))
    calls = {"n": 0}
    real_loss = run.loss_fn

    def interrupting_loss(logits, target):
        calls["n"] += 1
        if calls["n"] == 4:
            raise KeyboardInterrupt  # what the second Ctrl-C does: stop inside the step
        return real_loss(logits, target)

    run.loss_fn = interrupting_loss
    metrics = train(run, tmp_path, {"batch": 16})
    assert metrics.status == "interrupted" and metrics.steps == 3
    assert json.loads((tmp_path / "metrics.json").read_text())["status"] == "interrupted"
    assert not (tmp_path / "checkpoint.pt").exists()  # step 4 was cut in half: that state is not saved


def test_bf16_autocast_runs(cfg_factory, tmp_path):
    assert run_tiny(cfg_factory("precision=bf16"), tmp_path).status == "completed"


@pytest.mark.parametrize(("present", "picked"), [({"cuda", "mps"}, "cuda"), ({"mps"}, "mps"), (set(), "cpu")])
def test_device_auto_prefers_cuda_then_mps_then_cpu(present, picked, monkeypatch):
    for name in ("cuda", "mps"):
        monkeypatch.setitem(build.DEVICES, name, lambda name=name: name in present)
    assert pick_device("auto").type == picked


def test_a_run_without_a_validation_split_trains_tests_and_says_what_it_cannot_measure(cfg_factory, tmp_path,
                                                                                      capsys):
    metrics = run_tiny(cfg_factory("data.val_size=0", "steps=null", "epochs=2"), tmp_path)
    assert metrics.status == "completed" and metrics.final.test_acc is not None and metrics.final.val_acc is None
    assert metrics.history == [] and metrics.dead_history == {}
    assert "no held-out examples for the dead-unit probe" in " ".join(capsys.readouterr().err.split())


def test_the_loss_watch_names_the_step_of_a_non_finite_loss_on_the_cpu():
    watch = NonFiniteLoss(torch.device("cpu"))
    assert watch.check(torch.tensor(0.5), 1) is None
    assert watch.check(torch.tensor(float("nan")), 2) == 2
    assert watch.check(torch.tensor(float("inf")), 3) == 3


def test_the_loss_watch_on_cuda_reads_a_flag_only_once_it_has_arrived(monkeypatch):
    arrived = iter([True, True, False, True])  # what each check finds of the previous step's copy

    class Event:  # stands in for torch.cuda.Event: whether the copy recorded before it has finished
        def record(self) -> None:
            pass

        def query(self) -> bool:
            return next(arrived)

    monkeypatch.setattr(torch.cuda, "Event", Event)
    watch = NonFiniteLoss(torch.device("cuda"))
    nan, ok = torch.tensor(float("nan")), torch.tensor(1.0)
    assert watch.check(ok, 1) is None  # nothing in flight yet
    assert watch.check(nan, 2) is None  # step 1 arrived: finite
    assert watch.check(ok, 3) == 2  # step 2 arrived: NaN, named one step late
    assert watch.check(nan, 4) is None  # step 3 still in flight: not read, left to the log window
    assert watch.check(ok, 5) == 4


def test_threads_auto_keeps_the_faster_of_one_thread_and_every_core(monkeypatch):
    from diagnose.training import threads

    def step_slow_with_many() -> None:  # a tiny model: threads cost more than they share
        time.sleep(0.002 * torch.get_num_threads())

    def step_fast_with_many() -> None:  # a large one: the work divides
        time.sleep(0.004 / torch.get_num_threads())

    before = torch.get_num_threads()
    try:
        assert threads.pick_threads(step_slow_with_many, 4) == 1
        assert threads.pick_threads(step_fast_with_many, 4) == 4
        assert threads.pick_threads(step_fast_with_many, 1) == 1  # nothing to choose
        monkeypatch.setattr(threads, "_share", None)
        monkeypatch.setenv("OMP_NUM_THREADS", "3")
        assert threads.most_threads() == 3  # a cluster's or a user's allocation caps it
        monkeypatch.setattr(threads, "_share", 2)
        assert threads.most_threads() == 2  # a launcher's share of the cores comes first
    finally:
        torch.set_num_threads(before)


def test_threads_auto_is_not_swayed_by_one_disturbed_step(monkeypatch):
    from diagnose.training import threads

    clock, calls = Clock(), []
    monkeypatch.setattr(threads, "time", clock)

    def step() -> None:  # 2 threads 20 % faster, but the first timed 2-thread pass is hit by a moment's load
        calls.append(torch.get_num_threads())
        clock.now += 0.2 if len(calls) == 4 else 0.01 / (1 + 0.25 * (torch.get_num_threads() - 1))

    before = torch.get_num_threads()
    try:
        assert threads.pick_threads(step, 2) == 2  # the sum of the three (as before) would have picked 1
        assert calls == [1, 2, 1, 2, 1, 2, 1, 2]  # warm-up each, then alternating: load hits both alike
    finally:
        torch.set_num_threads(before)


class Clock:
    """A clock the simulated steps move on: threads.py reads it instead of the host's."""

    def __init__(self):
        self.now = 0.0

    def perf_counter(self) -> float:
        return self.now


def simulate(monkeypatch, cost, steps: int) -> tuple[list[list[int]], list[float]]:
    """threads=auto over `steps` simulated training steps, each taking cost(threads, now) seconds; returns its
    [first step, threads] changes and each step's start time."""
    from diagnose.training import threads

    clock = Clock()
    monkeypatch.setattr(threads, "time", clock)
    monkeypatch.setattr(threads, "_share", 2)

    def step() -> None:
        clock.now += cost(torch.get_num_threads(), clock.now)

    chooser, used, starts = threads.Threads("auto", step), [], []
    for i in range(1, steps + 1):
        chooser.before_step(i, used)
        starts.append(clock.now)
        step()
    return used, starts


@pytest.mark.parametrize("busy_first", [True, False], ids=["busy-then-quiet", "quiet-then-busy"])
def test_threads_auto_follows_a_change_of_load(monkeypatch, busy_first):
    from diagnose.training.threads import RECHECK_S, TRIAL_STEPS

    def cost(threads: int, now: float) -> float:  # one thread 10 ms; two 25 ms while busy, 5 ms while quiet
        busy = (now < 20) == busy_first
        return 0.010 if threads == 1 else 0.025 if busy else 0.005

    before = torch.get_num_threads()
    try:
        used, starts = simulate(monkeypatch, cost, 6000)
    finally:
        torch.set_num_threads(before)
    first, then = (1, 2) if busy_first else (2, 1)
    assert used[0] == [1, first] and len(used) == 2 and used[1][1] == then
    switched_at = starts[used[1][0] - 1]
    assert 20 < switched_at < 20 + RECHECK_S + 2 * TRIAL_STEPS * 0.025  # at the first re-check after the change


def test_threads_auto_stays_put_where_the_other_count_is_not_clearly_faster(monkeypatch):
    before = torch.get_num_threads()
    try:  # two threads 5 % faster: it starts with them, and a re-check's 5 % the other way does not switch back
        used, _ = simulate(monkeypatch, lambda threads, now: 0.010 if threads == 1 else 0.0095, 3000)
        assert used == [[1, 2]]
        used, _ = simulate(monkeypatch, lambda threads, now: 0.010 if threads == 1 else 0.0105, 3000)
        assert used == [[1, 1]]
    finally:
        torch.set_num_threads(before)


def test_threads_auto_rechecks_cost_little_where_the_other_count_is_much_slower(monkeypatch):
    from diagnose.training.threads import BUDGET

    before = torch.get_num_threads()
    try:  # 2 threads 8x slower (another job spinning on one of two cores): each re-check's 3 such steps cost 0.21 s
        used, starts = simulate(monkeypatch, lambda threads, now: 0.010 if threads == 1 else 0.080, 12000)
    finally:
        torch.set_num_threads(before)
    assert used == [[1, 1]]
    spent, all_on_one = starts[-1] + 0.010, 12000 * 0.010  # the run's training time, and all of it on 1 thread
    assert 1.0 < spent / all_on_one <= 1 + BUDGET + 0.005  # it did re-check, within its budget


def test_a_fixed_thread_count_is_never_changed_and_is_recorded(cfg_factory, tmp_path):
    metrics = run_tiny(cfg_factory("steps=6", "threads=1"), tmp_path)
    assert metrics.threads == [[1, 1]] and torch.get_num_threads() == 1
    assert metrics.config["threads"] == 1
    events = EventAccumulator(str(tmp_path)).Reload()
    assert {e.value for e in events.Scalars("perf/threads")} == {1.0}


def test_the_timed_pass_leaves_the_model_as_it_was():
    from diagnose.training.threads import training_pass

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.BatchNorm1d(8), torch.nn.Dropout(0.5),
                                torch.nn.Linear(8, 3)).train()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    step = training_pass(model, torch.nn.CrossEntropyLoss(), torch.randn(6, 4), torch.randint(0, 3, (6,)))
    torch.manual_seed(5)
    step()
    after = torch.rand(1)
    torch.manual_seed(5)
    assert torch.equal(after, torch.rand(1))  # the random stream untouched
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())
    assert all(p.grad is None for p in model.parameters())


def test_threads_must_be_auto_or_a_whole_number():
    from diagnose.errors import UserError

    with pytest.raises(UserError, match="threads \\(auto or a number\\) must be a whole number"):
        compose_config([*TINY, "threads=many"])
