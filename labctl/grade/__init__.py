"""Grading students' answers to the lab's four exercises (`labctl grade`).

The engine-free core lives here: intake of submissions (submission.py), the
test catalog as data (catalog.py), the outcome model and exit-code rule
(results.py), and the report writers (writers.py). The sandbox runner and the
exercise tests build on these; nothing in this package talks to Docker.
"""
