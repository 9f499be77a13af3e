"""Puts fake-gcs-server behind the one Cloud Storage call it lacks.

object_store uploads an object with the XML API (`PUT /BUCKET/OBJECT`); fake-gcs-server
answers that with "invalid uploadType". This proxy turns exactly that request into the JSON
API's media upload (`POST /upload/storage/v1/b/BUCKET/o?uploadType=media&name=OBJECT`) and
answers with the XML API's headers (`ETag`, `x-goog-generation`). Every other request (reads,
listings, deletes) reaches the emulator unchanged. Preconditions are not passed on: the
emulator ignores them anyway (a second create-only upload of one object succeeds).

    python gcs_xml_put.py LISTEN_PORT EMULATOR_PORT
"""

import http.client
import json
import sys
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

HOP = {"connection", "keep-alive", "transfer-encoding", "host", "content-length"}


class Proxy(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def _body(self):
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _send(self, method, path, body, headers):
        upstream = http.client.HTTPConnection("127.0.0.1", EMULATOR_PORT, timeout=60)
        headers = {k: v for k, v in headers.items() if k.lower() not in HOP}
        headers["Host"] = f"127.0.0.1:{EMULATOR_PORT}"
        headers["Content-Length"] = str(len(body))
        upstream.request(method, path, body=body, headers=headers)
        answer = upstream.getresponse()
        return answer.status, answer.getheaders(), answer.read()

    def _reply(self, status, headers, body):
        self.send_response(status)
        for k, v in headers:
            if k.lower() not in HOP:
                self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _forward(self):
        self._reply(*self._send(self.command, self.path, self._body(), dict(self.headers)))

    do_GET = do_HEAD = do_DELETE = do_POST = do_PATCH = _forward

    def do_PUT(self):
        url = urllib.parse.urlsplit(self.path)
        parts = url.path.lstrip("/").split("/", 1)
        if url.query or len(parts) != 2 or "x-goog-copy-source" in self.headers:
            return self._forward()
        bucket, name = parts[0], urllib.parse.unquote(parts[1])
        query = {"uploadType": "media", "name": name}
        path = f"/upload/storage/v1/b/{bucket}/o?{urllib.parse.urlencode(query)}"
        headers = {"Content-Type": self.headers.get("Content-Type", "application/octet-stream")}
        status, answer_headers, body = self._send("POST", path, self._body(), headers)
        if status != 200:
            return self._reply(status, answer_headers, body)
        meta = json.loads(body)
        headers = [("ETag", f'"{meta["etag"]}"'), ("x-goog-generation", str(meta["generation"]))]
        self._reply(200, headers, b"")


if __name__ == "__main__":
    LISTEN_PORT, EMULATOR_PORT = int(sys.argv[1]), int(sys.argv[2])
    ThreadingHTTPServer(("127.0.0.1", LISTEN_PORT), Proxy).serve_forever()
