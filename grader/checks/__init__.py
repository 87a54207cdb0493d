"""Small pure checks: values in, `Outcome` out. No kernel, no files.

Assignment specs (solutions/*.py) fetch values from the student's kernel
through a CheckContext and hand them to these functions.
"""
