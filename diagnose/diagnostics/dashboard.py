"""TensorBoard's Custom Scalars layout: one multi-line chart per per-layer metric, with every layer's series."""

from typing import Any

from diagnose.diagnostics import metrics as metric_table

# Charts of run-level series, by category, drawn after the category's per-layer charts: (title, tag regex)
RUN_CHARTS = {
    "normalisation": [("val accuracy: BN in train vs eval mode", r"bn/val_acc_.*")],
    "training": [("loss", r"(train|val|test)/loss"), ("accuracy", r"(train|val|test)/acc")],
}


def custom_scalars_layout() -> dict[str, dict[str, list[Any]]]:
    """For SummaryWriter.add_custom_scalars, which may be called only once per writer."""
    layout: dict[str, dict[str, list[Any]]] = {}
    for metric in metric_table.LAYER_METRICS:
        if metric.chart is not None:
            regex = f"{metric.name}/.*" + (f"|reference/{metric.name}" if metric.reference else "")
            layout.setdefault(metric.chart, {})[metric.title] = ["Multiline", [regex]]
    for category, charts in RUN_CHARTS.items():
        for title, regex in charts:
            layout.setdefault(category, {})[title] = ["Multiline", [regex]]
    return layout
