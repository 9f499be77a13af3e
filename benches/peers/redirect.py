"""mitmproxy addon: requests for api.hubapi.com go to the sandbox (plain HTTP on loopback).

The peers call https://api.hubapi.com unchanged; mitmproxy terminates their TLS with a
throwaway CA (its confdir is a temporary folder) and this addon sends each request on to
PEERS_SANDBOX instead. Any other host is refused, so that nothing leaves the machine.
"""

import os
import urllib.parse

from mitmproxy import http

SANDBOX = urllib.parse.urlparse(os.environ["PEERS_SANDBOX"])


def request(flow: http.HTTPFlow) -> None:
    if flow.request.pretty_host != "api.hubapi.com":
        flow.response = http.Response.make(502, b"only api.hubapi.com is proxied", {"Content-Type": "text/plain"})
        return
    flow.request.scheme = "http"
    flow.request.host = SANDBOX.hostname
    flow.request.port = SANDBOX.port
