"""Scoring (docs/rules.md, "Scoring") and log compliance checks: `algoperf score`,
`algoperf check-logs`.

Modules: `targets` (what each workload must reach), `read` (the log tree), `score` (time to
target, performance profiles, benchmark score, speedups), `report` (CSV, PNG, Markdown),
`check_logs` (per-trial rule checks), and `catalog`: the registry's facts as data, which the
command layer (`cli/scoring.py`) builds and passes in; nothing here imports `workloads`.
Importing this package imports neither pandas nor matplotlib.
"""
