"""What kind of component a layer is, as the diagnostics and findings read it: plain names, importable without torch
(`diagnose report` reads results without it)."""

# activations: what the diagnostics watch for in their outputs
RELU_LIKE = "relu_like"  # a unit can die: output 0 for every input, so no gradient ever reaches it
SATURATING = "saturating"  # flat tails, where the local gradient is nearly 0
SMOOTH = "smooth"  # nonlinear, but neither dies nor saturates (a leaky unit with negative input still passes gradient)
IDENTITY = "identity"  # linear: a stack of them is one linear map

# normalisations: whose statistics they normalise with
BATCH = "batch"  # the batch's statistics in training, running averages in eval: depends on the batch size
EXAMPLE = "example"  # each example's own statistics: the same in training and eval
NONE = "none"  # no normalisation
