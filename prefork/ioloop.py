"""``import prefork.ioloop`` is ``prefork.worker.ioloop`` (the seed's module path)."""

import importlib
import sys

sys.modules[__name__] = importlib.import_module("prefork.worker.ioloop")
