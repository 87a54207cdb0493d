"""Orchestration: one submission through every stage (pipeline.py), a class on this machine
(batch.py, with its LocalRunner) or on a Dask cluster (distributed.py), and the record of what was
graded (ledger.py)."""
