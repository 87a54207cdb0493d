"""Code the grader sends into the student's kernel.

This package is copied into each sandbox as `grader_child` and imported by
the kernel, so it must not import anything from `grader`. The parent never
trusts what it returns: it reads answers with `grader.sandbox.exchange`, which loads
only JSON and pickle-free .npy files.
"""
