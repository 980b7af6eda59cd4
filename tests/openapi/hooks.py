"""Schemathesis hooks for Switchboard's REST API.

Every REST call needs a JWT whose audience is the request URL (its path, and its `application`
parameter when there is one), signed with an access key. The signer runs on the request exactly
as it is sent (after Schemathesis and requests encoded the path and the query), so the token
names the path the server sees. The key comes from SWITCHBOARD_ACCESS_KEY.
"""

import base64
import hashlib
import hmac
import json
import os
import time
from urllib.parse import parse_qs, urlsplit

import requests
import schemathesis


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def mint(key: str, audience: str, lifetime: int = 600) -> str:
    header = {"alg": "HS256", "typ": "JWT"}
    now = int(time.time())
    claims = {"aud": audience, "iat": now, "nbf": now, "exp": now + lifetime}
    signing_input = _b64(json.dumps(header).encode()) + "." + _b64(json.dumps(claims).encode())
    signature = hmac.new(key.encode(), signing_input.encode(), hashlib.sha256).digest()
    return signing_input + "." + _b64(signature)


class AccessKeyToken(requests.auth.AuthBase):
    """Signs each request for its own URL."""

    def __init__(self, key: str):
        self.key = key

    def __call__(self, request):
        url = urlsplit(request.url)
        audience = f"{url.scheme}://{url.netloc}{url.path}"
        applications = parse_qs(url.query, keep_blank_values=True).get("application", [])
        if len(applications) == 1:
            audience += "?application=" + applications[0]
        request.headers["Authorization"] = "Bearer " + mint(self.key, audience)
        return request


schemathesis.auth.set_from_requests(AccessKeyToken(os.environ["SWITCHBOARD_ACCESS_KEY"]))
