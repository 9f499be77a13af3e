#!/usr/bin/env python3
"""Serves the example responses of Pipedrive's own OpenAPI specs, as a Pipedrive company would.

usage: spec_examples_server.py SPEC_DIR PORT_FILE

Every GET operation of the vendored v1 and v2 specs answers its documented 200 example:
`/api/v1/...` from the v1 spec, `/api/v2/...` from the v2 spec, path templates such as
`/deals/{id}/changelog` matched segment by segment. Each example is the whole list: its
cursor is turned to null and its v1 pagination to "no more items", so that a client pages to
the end. Anything else answers 404. The port listened on is written to PORT_FILE; every request
is logged to stderr. Written apart from crmdump: it shares no code with the exporter or the
sandbox, so that the exporter is checked against what Pipedrive documents, not against itself.
"""

import json
import pathlib
import sys
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import yaml

LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def examples(spec):
    """{path template: example body} of every GET with a JSON 200 example."""
    out = {}
    for template, operations in spec["paths"].items():
        op = operations.get("get")
        content = (op or {}).get("responses", {}).get("200", {}).get("content", {}).get("application/json", {})
        example = content.get("example")
        if example is None and content.get("examples"):
            example = next(iter(content["examples"].values())).get("value")
        if example is not None:
            out[template] = last_page(example)
    return out


def last_page(body):
    """The example as the only page: no cursor, no more items."""
    extra = body.get("additional_data") if isinstance(body, dict) else None
    if isinstance(extra, dict):
        if "next_cursor" in extra:
            extra["next_cursor"] = None
        pagination = extra.get("pagination")
        if isinstance(pagination, dict):
            pagination["more_items_in_collection"] = False
            pagination.pop("next_start", None)
        if "more_items_in_collection" in extra:
            extra["more_items_in_collection"] = False
    return body


def matches(template, path):
    t, p = template.strip("/").split("/"), path.strip("/").split("/")
    return len(t) == len(p) and all(a.startswith("{") or a == b for a, b in zip(t, p))


def find(table, path):
    """The example of the most literal template matching `path`."""
    found = [(sum(not s.startswith("{") for s in t.split("/")), t) for t in table if matches(t, path)]
    return table[max(found)[1]] if found else None


def main():
    spec_dir, port_file = pathlib.Path(sys.argv[1]), sys.argv[2]
    served = {
        "/api/v1": examples(yaml.load((spec_dir / "pipedrive-openapi-v1.yaml").read_text(), Loader=LOADER)),
        "/api/v2": examples(yaml.load((spec_dir / "pipedrive-openapi-v2.yaml").read_text(), Loader=LOADER)),
    }

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            path = urllib.parse.urlparse(self.path).path
            body = None
            for prefix, table in served.items():
                if path.startswith(prefix + "/"):
                    body = find(table, path[len(prefix):])
            status = 200 if body is not None else 404
            if body is None:
                body = {"success": False, "error": f"no example for {path}", "data": None}
            raw = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(raw)))
            self.end_headers()
            self.wfile.write(raw)

        def log_message(self, fmt, *args):
            sys.stderr.write("%s\n" % (fmt % args))

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    pathlib.Path(port_file).write_text(str(server.server_address[1]))
    server.serve_forever()


if __name__ == "__main__":
    main()
