"""``import prefork.httputil`` is ``prefork.worker.httputil`` (the seed's module path)."""

import importlib
import sys

sys.modules[__name__] = importlib.import_module("prefork.worker.httputil")
