"""Talking to the student's kernel: the session that starts and stops it (session.py), the
jupyter_client classes under it (clients.py), running the notebook's cells (execution.py), and the
files that carry values across the wall (exchange.py)."""
