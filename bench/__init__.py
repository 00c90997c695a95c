"""Side-by-side benchmarks of prefork and its peers (``python bench/run.py``)."""
