#!/usr/bin/env python3
"""Token issuer for the resolve-mode end-to-end test (resolve.sh).

Serves `GET /token?service=...&scope=...` as the token server of the Docker
registry token authentication flow (distribution's docs/spec/auth/token.md
and jwt.md). Tokens are JWTs signed with RS256 by the `openssl` CLI. Their
`x5c` header contains the issuer's certificate, which the registry trusts
through its `rootcertbundle`, and their claims are iss, sub, aud, exp, nbf,
iat, jti and access.

Grants:
- anonymous requests get `pull` on every repository except those under a
  private prefix, and nothing else;
- requests with the Basic credentials of the one configured user get every
  `pull` and `push` they request;
- requests with other Basic credentials get 401, as the token spec requires.

Every request is logged as one JSON line to the log file: method, path,
client, account, scopes requested, access granted, status. The password is
never logged.

Only the Python 3 standard library and the `openssl` CLI are used.
"""

import argparse
import base64
import datetime
import http.server
import json
import secrets
import subprocess
import sys
import threading
import time
import urllib.parse

# Lifetime of the tokens. Distribution 2.8 allows 60 s of clock skew on exp
# and nbf, so nbf is set a little in the past.
TOKEN_LIFETIME_SECS = 300
NOT_BEFORE_SLACK_SECS = 5
GRANTABLE_ACTIONS = ("pull", "push")


def base64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def certificate_der_base64(pem_path: str) -> str:
    """Returns the first certificate of a PEM file as standard base64 DER,
    the encoding that the JWS `x5c` header uses (RFC 7515, section 4.1.6)."""
    lines = []
    inside = False
    with open(pem_path, encoding="ascii") as pem:
        for line in pem:
            line = line.strip()
            if line == "-----BEGIN CERTIFICATE-----":
                inside = True
            elif line == "-----END CERTIFICATE-----":
                break
            elif inside:
                lines.append(line)
    if not lines:
        raise ValueError(f"no certificate in {pem_path}")
    return "".join(lines)


class Issuer:
    """The signing key, the grant rules and the request log."""

    def __init__(self, args):
        self.key_path = args.key
        self.x5c = certificate_der_base64(args.certificate)
        self.issuer = args.issuer
        self.service = args.service
        self.username = args.username
        with open(args.password_file, encoding="utf-8") as file:
            self.password = file.read().rstrip("\n")
        self.private_prefixes = args.private_prefix or []
        self.log_file = open(args.log, "a", encoding="utf-8", buffering=1)
        self.log_lock = threading.Lock()

    def log(self, record: dict) -> None:
        with self.log_lock:
            self.log_file.write(json.dumps(record, sort_keys=True) + "\n")

    def is_private(self, repository: str) -> bool:
        return any(
            repository == prefix or repository.startswith(prefix + "/")
            for prefix in self.private_prefixes
        )

    def grant(self, account, scopes):
        """Returns the access claim for the requested scopes: a list of
        {type, name, actions} with only the actions the account may have."""
        access = []
        for scope in scopes:
            # repository:NAME:ACTIONS, where NAME never contains ':' here.
            parts = scope.split(":")
            if len(parts) != 3 or parts[0] != "repository":
                continue
            _, name, actions = parts
            requested = [a for a in actions.split(",") if a in GRANTABLE_ACTIONS]
            if account is None:
                allowed = [] if self.is_private(name) else [a for a in requested if a == "pull"]
            else:
                allowed = requested
            access.append({"type": "repository", "name": name, "actions": allowed})
        return access

    def sign(self, claims: dict) -> str:
        header = {"typ": "JWT", "alg": "RS256", "x5c": [self.x5c]}
        signing_input = (
            base64url(json.dumps(header, separators=(",", ":")).encode())
            + "."
            + base64url(json.dumps(claims, separators=(",", ":")).encode())
        )
        # RS256 is RSASSA-PKCS1-v1_5 with SHA-256, what `openssl dgst -sign`
        # writes for an RSA key.
        signature = subprocess.run(
            ["openssl", "dgst", "-sha256", "-sign", self.key_path],
            input=signing_input.encode(),
            capture_output=True,
            check=True,
            timeout=10,
        ).stdout
        return signing_input + "." + base64url(signature)

    def issue(self, account, scopes):
        now = int(time.time())
        claims = {
            "iss": self.issuer,
            "sub": account or "",
            "aud": self.service,
            "exp": now + TOKEN_LIFETIME_SECS,
            "nbf": now - NOT_BEFORE_SLACK_SECS,
            "iat": now,
            "jti": secrets.token_hex(16),
            "access": self.grant(account, scopes),
        }
        issued_at = datetime.datetime.fromtimestamp(now, datetime.timezone.utc)
        token = self.sign(claims)
        body = {
            "token": token,
            "access_token": token,
            "expires_in": TOKEN_LIFETIME_SECS,
            "issued_at": issued_at.strftime("%Y-%m-%dT%H:%M:%SZ"),
        }
        return body, claims["access"]

    def authenticate(self, header):
        """Returns (ok, account): account is None for anonymous requests."""
        if header is None:
            return True, None
        scheme, _, value = header.partition(" ")
        if scheme.lower() != "basic":
            return False, None
        try:
            decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
        except (ValueError, UnicodeDecodeError):
            return False, None
        username, _, password = decoded.partition(":")
        if username == self.username and secrets.compare_digest(password, self.password):
            return True, username
        return False, username


def make_handler(issuer: Issuer):
    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format, *args):  # noqa: A002 (the base class's name)
            pass

        def send_json(self, status: int, body: dict, extra_headers=()):
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            for name, value in extra_headers:
                self.send_header(name, value)
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(data)

        def do_GET(self):
            url = urllib.parse.urlsplit(self.path)
            query = urllib.parse.parse_qs(url.query)
            scopes = [s for value in query.get("scope", []) for s in value.split(" ") if s]
            record = {
                "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "method": self.command,
                "path": url.path,
                "client": self.client_address[0],
                "service": query.get("service", [""])[0],
                "scopes": scopes,
                "basic_auth": self.headers.get("Authorization") is not None,
            }

            if url.path != "/token":
                status, body, access = 404, {"error": "not found"}, None
            elif record["service"] != issuer.service:
                status = 400
                body = {"error": f"unknown service, expected {issuer.service!r}"}
                access = None
            else:
                ok, account = issuer.authenticate(self.headers.get("Authorization"))
                record["account"] = account
                if not ok:
                    status, body, access = 401, {"error": "invalid credentials"}, None
                else:
                    body, access = issuer.issue(account, scopes)
                    status = 200

            record["status"] = status
            record["access"] = access
            issuer.log(record)
            headers = [("WWW-Authenticate", 'Basic realm="token"')] if status == 401 else []
            self.send_json(status, body, headers)

        def do_POST(self):
            # The OAuth2 form of the token request (jwt.md's oauth.md) is not
            # served. Clients that try it, such as containerd with
            # credentials, fall back to GET on 405.
            length = int(self.headers.get("Content-Length") or 0)
            if length:
                self.rfile.read(length)
            issuer.log(
                {
                    "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                    "method": "POST",
                    "path": self.path,
                    "client": self.client_address[0],
                    "status": 405,
                }
            )
            self.send_json(405, {"error": "use GET"}, [("Allow", "GET")])

    return Handler


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--listen", required=True, help="HOST:PORT to listen on")
    parser.add_argument("--key", required=True, help="RSA private key, PEM")
    parser.add_argument("--certificate", required=True, help="certificate of the key, PEM")
    parser.add_argument("--issuer", required=True, help="the iss claim")
    parser.add_argument("--service", required=True, help="the aud claim; requests must name it")
    parser.add_argument("--username", required=True, help="the one user with credentials")
    parser.add_argument("--password-file", required=True, help="file with the user's password")
    parser.add_argument(
        "--private-prefix",
        action="append",
        help="repository name (and everything below it) that anonymous requests may not pull",
    )
    parser.add_argument("--log", required=True, help="file the JSON request log is appended to")
    args = parser.parse_args()

    host, _, port = args.listen.rpartition(":")
    issuer = Issuer(args)
    server = http.server.ThreadingHTTPServer((host, int(port)), make_handler(issuer))
    server.daemon_threads = True
    print(f"token issuer listening on {args.listen}", file=sys.stderr, flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
