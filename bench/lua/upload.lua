-- A 1 MiB upload: every request is POST /upload with a 1 MiB body
-- (wrk.format adds the Content-Length).
wrk.method = "POST"
wrk.path = "/upload"
wrk.headers["Content-Type"] = "application/octet-stream"
wrk.body = string.rep("x", 1024 * 1024)
