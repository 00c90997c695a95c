-- A 10 KB echo: every request is POST /echo with a 10 KiB body, which the
-- ASGI app sends back (wrk.format adds the Content-Length).
wrk.method = "POST"
wrk.path = "/echo"
wrk.headers["Content-Type"] = "application/octet-stream"
wrk.body = string.rep("x", 10 * 1024)
