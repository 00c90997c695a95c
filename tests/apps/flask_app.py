"""A small real Flask application for the WSGI tests.

Served by the CLI (``python -m prefork ... tests.apps.flask_app:app``, the
interface detected from the callable) or by ``wsgi_app.py --app``.
"""

from __future__ import annotations

import hashlib
import os
import time

from flask import Flask, Response, jsonify, redirect, request, stream_with_context, url_for

app = Flask(__name__)


@app.get("/")
def index():
    return "hello from flask"


@app.get("/users/<int:user_id>")
def user(user_id: int):
    return jsonify(id=user_id, name=f"user{user_id}")


@app.get("/files/<path:name>")
def file_name(name: str):
    return jsonify(name=name)


@app.get("/search")
def search():
    return jsonify(
        q=request.args.get("q"),
        page=request.args.get("page", type=int),
        tags=request.args.getlist("tag"),
    )


@app.post("/json")
def echo_json():
    data = request.get_json()
    return jsonify(received=data, content_type=request.content_type), 201


@app.post("/form")
def form():
    return jsonify(form=request.form.to_dict(flat=False))


@app.post("/upload")
def upload():
    uploaded = request.files["file"]
    content = uploaded.read()
    return jsonify(
        filename=uploaded.filename,
        mimetype=uploaded.mimetype,
        size=len(content),
        sha256=hashlib.sha256(content).hexdigest(),
        description=request.form.get("description"),
    )


@app.get("/old")
def old():
    return redirect(url_for("user", user_id=7))


@app.get("/stream")
def stream():
    count = request.args.get("n", 5, type=int)

    def generate():
        for i in range(count):
            yield f"line {i}\n"

    return Response(stream_with_context(generate()), mimetype="text/plain")


@app.get("/error")
def error():
    raise RuntimeError("a bug in a view")


@app.get("/abort")
def abort_view():
    from flask import abort

    abort(403)


@app.get("/café")
def cafe():
    return jsonify(path=request.path)


@app.get("/slow")
def slow():
    mark = request.args.get("mark")
    if mark:  # the test's proof that the request is in the application
        with open(mark, "a") as f:
            f.write(f"started {os.getpid()}\n")
    time.sleep(request.args.get("s", 1.0, type=float))
    return jsonify(pid=os.getpid(), slept=True)


@app.get("/pid")
def pid():
    return jsonify(pid=os.getpid())


@app.get("/url")
def url():
    return jsonify(url=request.url, host=request.host, remote_addr=request.remote_addr)


@app.get("/cookie")
def cookie():
    response = jsonify(seen=request.cookies.get("visit"))
    response.set_cookie("visit", "1")
    return response
