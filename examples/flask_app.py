"""Flask (WSGI) served by the prefork command, two workers.

    python -m prefork -w 2 --interface wsgi examples.flask_app:app

Then: curl http://127.0.0.1:8000/hello/world

Each worker runs the application on a small thread pool (``--threads``,
default 4), so a slow view never blocks its worker's event loop.
"""

import os

from flask import Flask, jsonify

app = Flask(__name__)


@app.get("/")
def index():
    return "Hello from Flask under prefork\n"


@app.get("/hello/<name>")
def hello(name: str):
    return jsonify(message=f"hello, {name}", framework="flask", pid=os.getpid())
