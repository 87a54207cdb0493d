"""`dask worker --preload` for tests/test_distributed.py: this worker says it has a CUDA device.

The test machine has no GPU. A worker started with `--resources GPU=1` and
this preload passes the grader's "does torch see CUDA here?" question, so
that the routing of model assignments to GPU workers can be tested; the probe
assignment it grades trains nothing.
"""

import grader.grading.distributed

grader.grading.distributed._cuda_available = lambda: True
