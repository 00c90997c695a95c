"""``import prefork.httpserver`` is ``prefork.worker.httpserver`` (the seed's module path)."""

import importlib
import sys

sys.modules[__name__] = importlib.import_module("prefork.worker.httpserver")
