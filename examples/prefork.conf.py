"""A gunicorn-style config file: settings as ``name = value``, and server hooks.

    python -m prefork -c examples/prefork.conf.py

serves ``app`` below; an application on the command line wins over it
(``python -m prefork -c examples/prefork.conf.py examples.flask_app:app``),
as does any option (``-b 0.0.0.0:8080``) and any ``PREFORK_*`` variable.
Every name is a prefork setting (see README.md, "Settings"); gunicorn's own
names (``keepalive``, ``loglevel``, ``wsgi_app``, ...) work too, so a
gunicorn.conf.py runs unchanged. ``kill -HUP <master pid>`` reads this file
again and rolls the workers onto the new values.

The hooks log through ``server.log`` (the master's logger) and ``worker.log``
(the worker's): their lines go to the error log, stderr here.
"""

# -- what to serve, and where
app = "examples.hello:handle_request"  # interface: auto (a callback here)
bind = ["127.0.0.1:8000"]  # a list: one entry per address (-b on the command line)

# -- workers
workers = 2
timeout = 30  # seconds without a heartbeat before a worker is killed as hung
graceful_timeout = 10  # seconds a stopping worker has to finish its requests
boot_timeout = 30  # seconds a new worker has to become ready
max_requests = 10000  # recycle a worker after this many requests...
max_requests_jitter = 500  # ...give or take, so they do not all recycle at once

# -- connections
keep_alive = 5  # seconds; keep it above your proxy's upstream keep-alive
header_timeout = 10
log_level = "info"


# -- server hooks (gunicorn's names and arguments)
def on_starting(server):
    """In the master, before it forks anything."""
    server.log.info(
        "hook on_starting: master %d, %d worker(s) to fork", server.pid, server.cfg.workers
    )


def post_fork(server, worker):
    """In each new worker, before the application is imported: reopen
    connections (a database, a cache) that must not cross a fork here."""
    worker.log.info("hook post_fork: worker %d (index %d)", worker.pid, worker.index)


def when_ready(server):
    """In the master, once every worker of the first generation is ready."""
    server.log.info("hook when_ready: workers %s", " ".join(map(str, server.worker_pids)))


def worker_exit(server, worker):
    """In each worker, as it exits (a stop, a recycle, a HUP roll)."""
    worker.log.info("hook worker_exit: worker %d served %d request(s)", worker.pid, worker.nr)
