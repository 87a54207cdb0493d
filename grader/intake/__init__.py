"""What comes in: a notebook read safely (notebooks.py), a class's submissions collected from a folder
or an LMS download (collect.py), and the copy a student uploads (submit.py)."""
