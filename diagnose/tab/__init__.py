"""The `diagnose` tab in TensorBoard: findings, the depth profile, a sweep against its batch size and what is read
over steps, drawn on their true axes (log depth profiles, a log2 batch axis), every point, unsmoothed.

plugin.py is the TensorBoard plugin (routes answering JSON, and the page in static/); targets.py finds the runs,
probes and sweeps under the logdir; findings.py, depth.py, batch.py and steps.py build each section's charts
(charts.py) from metrics.json and the event files read through TensorBoard's data provider (events.py)."""
