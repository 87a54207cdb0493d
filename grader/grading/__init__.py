"""Orchestration: one submission through every stage (pipeline.py, with the options of options.py), a
class on this machine (batch.py, with its LocalRunner) or on a Dask cluster (distributed.py, its
worker plugin in dask_plugin.py), the record of what was graded (ledger.py), and the one owner of
what a process keeps warm between submissions (warm.py)."""
