"""Talking to the student's kernel: the session that starts and stops it (session.py), the
jupyter_client classes under it (clients.py), and running the notebook's cells (execution.py). The
values that cross the wall travel as files (grader.sandbox.exchange)."""
