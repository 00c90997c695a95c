"""Runnable examples; run them from the repository root (see README.md, "Examples").

A package, so that ``python -m prefork ... examples.flask_app:app`` imports
these files and not some other installed ``examples``.
"""
