"""``python -m prefork``: the same as the ``prefork`` command."""

from prefork.cli import main

if __name__ == "__main__":
    main()
