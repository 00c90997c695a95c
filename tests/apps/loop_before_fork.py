"""Creates the IOLoop before start(2): start() must refuse with a clear error."""

from prefork import httpserver, ioloop


def handle_request(request):
    request.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
    request.finish()


ioloop.IOLoop.instance()  # the mistake: a loop exists before the fork
server = httpserver.HTTPServer(handle_request)
server.bind(0, "127.0.0.1")
server.start(2)
ioloop.IOLoop.instance().start()
