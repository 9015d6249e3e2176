"""TensorBoard layouts: one multi-line chart per metric with every layer, and plots against depth."""

from typing import Any

# (category, [(chart title, tag regex)]) — each chart draws every layer's series for one metric
METRICS = [
    ("activations", [("std of each layer's output", r"act_std/.*"), ("mean of each layer's output", r"act_mean/.*"),
                     ("fraction of exact zeros", r"act_zero/.*"), ("saturated fraction (sigmoid/tanh)",
                                                                   r"saturation/.*")]),
    ("dead units", [("dead units on the probe batch", r"dead/.*"),
                    ("permanently dead units", r"dead_permanent/.*")]),
    ("gradients", [("L2 norm of the gradient w.r.t. each output", r"grad_norm/.*"),
                   ("std of the gradient w.r.t. each output", r"grad_std/.*"),
                   ("weight gradient norm", r"weight_grad_norm/.*"),
                   ("update / weight ratio (reference line: 1e-3)",
                    r"update_ratio/.*|reference/update_ratio"),
                   ("sign agreement of weight gradients (1 = zig-zag)", r"sign_agreement/.*")]),
    ("weights", [("weight norm", r"weight_norm/.*")]),
    ("normalisation", [("BN batch mean vs running mean (in running stds)", r"bn_shift/.*"),
                       ("BN batch var / running var", r"bn_var_ratio/.*"),
                       ("val accuracy: BN in train vs eval mode", r"bn/val_acc_.*"),
                       ("Batch-Instance Norm rho (1 = BN, 0 = IN)", r"bin_rho/.*")]),
    ("training", [("loss", r"(train|val|test)/loss"), ("accuracy", r"(train|val|test)/acc")]),
]


def custom_scalars_layout() -> dict[str, dict[str, list[Any]]]:
    """For SummaryWriter.add_custom_scalars, which may be called only once per writer."""
    return {category: {title: ["Multiline", [regex]] for title, regex in charts} for category, charts in METRICS}


def depth_figure(latest: dict[str, float], layer_names: list[str], step: int) -> Any:
    """Activation std and output-gradient norm against layer depth (log scale): vanishing or exploding
    signals show as a slope, a healthy network as a flat line."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    # a bare Figure, not pyplot: nothing global keeps it (or its caches) alive once TensorBoard has it
    fig = Figure(figsize=(10, 3.5))
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, 2)
    for ax, prefix, title in ((axes[0], "act_std/", "activation std"), (axes[1], "grad_norm/", "gradient norm")):
        names = [name for name in layer_names if prefix + name in latest]  # forward order
        values = [latest[prefix + name] for name in names]
        ax.plot(range(len(values)), values, marker="o")
        ax.set_yscale("log")
        ax.set_xticks(range(len(names)), names, rotation=90, fontsize=6)
        ax.set_xlabel("layer (forward order)")
        ax.set_title(f"{title} at step {step}")
    fig.tight_layout()
    return fig
