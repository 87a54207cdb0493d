"""grader: an autograder for neural-network courses taught in Jupyter notebooks."""

__version__ = "0.1.0"
