"""A target's scalars, read through TensorBoard's data provider: the event files are read once, by TensorBoard, and
each series the tab draws is the one TensorBoard's own tabs show, every point of it."""

import re
from typing import Any

from tensorboard.data import provider

SCALARS = "scalars"  # the plugin TensorBoard files add_scalar's values under
EVERY_POINT = 1_000_000  # no downsampling: more points than TensorBoard's reservoir keeps of a series (1000)
DEPTH_LABEL = re.compile(r"^(\d+) (.+)$")  # '03 features.4.act' (diagnostics/layers.py depth_labels; a test inverts)

Points = list[tuple[int, float]]  # (step, value) in step order


class Events:
    """The scalars of a request's experiment."""

    def __init__(self, data_provider: Any, ctx: Any, experiment: str):
        self.data_provider, self.ctx, self.experiment = data_provider, ctx, experiment

    def tags(self, runs: list[str]) -> dict[str, list[str]]:
        """The scalar tags of each of `runs` that has any."""
        listing = self.data_provider.list_scalars(self.ctx, experiment_id=self.experiment, plugin_name=SCALARS,
                                                  run_tag_filter=provider.RunTagFilter(runs=runs))
        return {run: sorted(tags) for run, tags in listing.items()}

    def read(self, runs: list[str], tags: list[str]) -> dict[str, dict[str, Points]]:
        """run -> tag -> every point, for the (run, tag) pairs that exist."""
        if not runs or not tags:
            return {}
        data = self.data_provider.read_scalars(self.ctx, experiment_id=self.experiment, plugin_name=SCALARS,
                                               downsample=EVERY_POINT,
                                               run_tag_filter=provider.RunTagFilter(runs=runs, tags=tags))
        return {run: {tag: [(datum.step, datum.value) for datum in points] for tag, points in by_tag.items()}
                for run, by_tag in data.items()}


def layer_of(tag: str) -> tuple[str, int, str] | None:
    """A per-layer tag's (metric, depth among the layers of its role, module name): 'act_std/03 features.4.act' ->
    ('act_std', 3, 'features.4.act'); None for any other tag."""
    metric, _, label = tag.partition("/")
    match = DEPTH_LABEL.match(label)
    return (metric, int(match.group(1)), match.group(2)) if match else None
