"""A Python server for herder's cluster mode: it serves on the listening socket herder passes
as descriptor 3 (socket activation), which every instance shares. Standard library only.

    herder start examples/cluster/python/herder.toml
"""
import http.server
import os
import signal
import socket
import socketserver
import threading


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # An idle keep-alive connection is closed after this long.
    timeout = 5

    def do_GET(self):
        body = f"hello from pid {os.getpid()} (instance {os.environ.get('HERDER_INSTANCE')})\n".encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        if stopping.is_set():
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


class Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True

    # Each connection counts from its accept to its close, so that none accepted is cut off.
    def process_request(self, request, client_address):
        busy.__enter__()
        super().process_request(request, client_address)

    def process_request_thread(self, request, client_address):
        try:
            super().process_request_thread(request, client_address)
        finally:
            busy.__exit__()


stopping = threading.Event()


class Busy:
    """Connections being served, to let them finish before the process ends."""

    def __init__(self):
        self.count = 0
        self.cond = threading.Condition()

    def __enter__(self):
        with self.cond:
            self.count += 1

    def __exit__(self, *exc):
        with self.cond:
            self.count -= 1
            self.cond.notify_all()

    def wait_idle(self, timeout):
        with self.cond:
            self.cond.wait_for(lambda: self.count == 0, timeout)


busy = Busy()


def main():
    if os.environ.get("LISTEN_PID") == str(os.getpid()) and int(os.environ.get("LISTEN_FDS", "0")) >= 1:
        # The socket herder bound for the app: already listening.
        listener = socket.socket(fileno=3)
        server = Server(listener.getsockname()[:2], Handler, bind_and_activate=False)
        server.socket.close()
        server.socket = listener
    else:
        # Run alone (not under herder): bind the port itself.
        server = Server(("", int(os.environ.get("PORT", "8000"))), Handler)

    def stop(signum, frame):
        # Stop accepting; requests under way finish (herder waits `kill_timeout`).
        stopping.set()
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    server.serve_forever()
    busy.wait_idle(timeout=4)


if __name__ == "__main__":
    main()
