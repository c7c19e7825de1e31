"""A real S3-speaking server on loopback (moto's standalone server, as its own process) and a
fault-injecting HTTP proxy to put between a client and it. Used by the tests and benchmarks."""
from __future__ import annotations

import http.client
import random
import socket
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Iterator

# Any key works with moto; these are what the test process and its Ray workers see in the
# environment (the standard AWS chain). Distinctive, so a test can check they never leak.
TEST_KEY = "AKIAZOOMINTESTKEY0001"
TEST_SECRET = "zoomin-test-secret-never-log-me"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def moto_server() -> Iterator[str]:
    """Start `python -m moto.server` on a free loopback port; yield its endpoint URL."""
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    endpoint = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 30
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                    break
            except OSError:
                if proc.poll() is not None or time.time() > deadline:
                    raise RuntimeError("moto server did not start")
                time.sleep(0.05)
        yield endpoint
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()


def s3_client(endpoint: str):
    import boto3
    return boto3.client("s3", endpoint_url=endpoint, aws_access_key_id=TEST_KEY,
                        aws_secret_access_key=TEST_SECRET, region_name="us-east-1")


def make_bucket(client, name: str) -> None:
    client.create_bucket(Bucket=name)


def put_many(client, bucket: str, objects: dict[str, bytes], threads: int = 16) -> None:
    from concurrent.futures import ThreadPoolExecutor
    with ThreadPoolExecutor(threads) as ex:
        list(ex.map(lambda kv: client.put_object(Bucket=bucket, Key=kv[0], Body=kv[1]), objects.items()))


class FaultProxy:
    """HTTP proxy to `upstream` that answers a share of requests with a fault instead.

    Faults: "503" (SlowDown, as S3 throttles), "500" (InternalError), "drop" (the connection is
    closed without an answer) and "cut" (a GET's body is cut off halfway). Seeded, so a run is
    repeatable; `counts` says how many of each were injected.
    """

    def __init__(self, upstream: str, rate: float = 0.2, seed: int = 0,
                 modes: tuple[str, ...] = ("503", "500", "drop", "cut")):
        self.upstream = upstream.split("://", 1)[1]
        self.rate, self.modes = rate, modes
        self.rng = random.Random(seed)
        self.lock = threading.Lock()
        self.counts = {m: 0 for m in modes}
        self.requests = 0
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):  # quiet
                pass

            def _body(self) -> bytes:
                if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                    out = b""
                    while True:
                        size = int(self.rfile.readline().split(b";")[0].strip(), 16)
                        if size == 0:
                            while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                                pass
                            return out
                        out += self.rfile.read(size)
                        self.rfile.readline()
                n = int(self.headers.get("Content-Length") or 0)
                return self.rfile.read(n) if n else b""

            def _handle(self):
                body = self._body()
                fault = proxy._pick(self.command)
                if fault == "drop":
                    self.close_connection = True
                    self.connection.shutdown(socket.SHUT_RDWR)
                    return
                if fault in ("503", "500"):
                    code, name = (503, "SlowDown") if fault == "503" else (500, "InternalError")
                    msg = (f"<?xml version='1.0' encoding='UTF-8'?><Error><Code>{name}</Code>"
                           f"<Message>injected</Message></Error>").encode()
                    self.send_response(code)
                    self.send_header("Content-Type", "application/xml")
                    self.send_header("Content-Length", str(len(msg)))
                    self.end_headers()
                    self.wfile.write(msg)
                    return
                conn = http.client.HTTPConnection(proxy.upstream, timeout=60)
                headers = {k: v for k, v in self.headers.items() if k.lower() != "transfer-encoding"}
                headers["Content-Length"] = str(len(body))
                conn.request(self.command, self.path, body=body, headers=headers)
                resp = conn.getresponse()
                data = resp.read()
                self.send_response(resp.status)
                for k, v in resp.getheaders():
                    if k.lower() not in ("transfer-encoding", "connection", "content-length",
                                         "date", "server"):
                        self.send_header(k, v)
                length = resp.getheader("Content-Length") if self.command == "HEAD" else str(len(data))
                self.send_header("Content-Length", length or "0")
                self.end_headers()
                conn.close()
                if self.command == "HEAD":
                    return
                if fault == "cut" and len(data) > 64:
                    self.wfile.write(data[: len(data) // 2])
                    self.wfile.flush()
                    self.close_connection = True
                    self.connection.shutdown(socket.SHUT_RDWR)
                    return
                self.wfile.write(data)

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _handle

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.endpoint = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def _pick(self, method: str):
        with self.lock:
            self.requests += 1
            if self.rng.random() >= self.rate:
                return None
            choices = [m for m in self.modes if m != "cut" or method == "GET"]
            mode = self.rng.choice(choices)
            self.counts[mode] += 1
            return mode

    def __enter__(self) -> "FaultProxy":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()
