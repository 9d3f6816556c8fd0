"""Metric backends of the evaluation, one file each; see `cocoins.eval.metrics.base` for the shared contract.

Each backend has `available() -> (ok, reason)` that looks only at the local disk (never the network); the
scorer records `null` plus the reason in metrics.json when it is not ok, or stops with the reason when
`eval.strict: true`.
"""
