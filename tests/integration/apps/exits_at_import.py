"""An application module that stops its own import, as settings modules do
when a variable is missing: the message must reach the user."""

import sys

sys.exit("config error: FOO is not set")
