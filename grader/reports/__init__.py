"""Formats of a result: terminal summary, HTML feedback, LMS exports. Formats only."""
