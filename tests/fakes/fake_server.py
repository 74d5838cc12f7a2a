"""What the fake providers (wechat_fake.py, sms_fake.py) share: the
threaded server, an "ID:SECRET" argument, and serving on 127.0.0.1 until
SIGTERM or SIGINT with the port written to a file (Python standard
library only)."""
import argparse
import os
import signal
import threading
from http.server import ThreadingHTTPServer


class Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True


def parse_pair(s):
    """argparse type: "ID:SECRET" -> (ID, SECRET)."""
    key_id, sep, secret = s.partition(":")
    if not sep or not key_id or not secret:
        raise argparse.ArgumentTypeError("expected ID:SECRET")
    return key_id, secret


def serve(handler, port_file):
    """Binds 127.0.0.1 on a free port, writes that port (decimal + newline)
    to port_file atomically once listening, serves until SIGTERM or SIGINT,
    and returns 0."""
    server = Server(("127.0.0.1", 0), handler)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1},
                              daemon=True)
    thread.start()
    tmp = "%s.tmp.%d" % (port_file, os.getpid())
    with open(tmp, "w") as f:
        f.write("%d\n" % server.server_address[1])
    os.replace(tmp, port_file)
    while not stop.wait(0.5):
        pass
    server.shutdown()
    server.server_close()
    return 0
