#!/usr/bin/env python3
"""Bearer-token service for strata's token-auth test registry.

Implements the Docker registry token flow (the one Docker Hub, GHCR, Quay... use):

  GET  /token?service=S&scope=repository:NAME:pull,push[&scope=...]
       optional HTTP basic auth; answers {"token", "access_token", "expires_in", "issued_at"}
  POST /token   (OAuth2 form: grant_type=password with username/password,
                 or grant_type=refresh_token with a refresh_token issued earlier)
  GET  /healthz -> 200 "ok"

Anonymous clients get `pull` only; a known user gets every action asked for;
wrong credentials get 401. Tokens are RS256 JWTs whose header carries the signing
certificate in `x5c`: docker-registry's `auth: token` verifies that chain against its
`rootcertbundle`, then checks iss (= its `issuer`), aud (= its `service`), exp/nbf.

Only the Python standard library and python3-cryptography (Debian package) are used.

  tokenserver.py --listen 127.0.0.1:5003 --key token.key --cert token.crt \
                 --issuer strata-test-issuer --credentials users.txt
  (users.txt: one `user:password` per line)
"""
import argparse
import base64
import json
import secrets
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding

TOKEN_TTL = 300


def b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


class Signer:
    def __init__(self, key_path, cert_path, issuer):
        with open(key_path, "rb") as f:
            self.key = serialization.load_pem_private_key(f.read(), password=None)
        with open(cert_path, "rb") as f:
            cert = x509.load_pem_x509_certificate(f.read())
        self.x5c = [base64.b64encode(cert.public_bytes(serialization.Encoding.DER)).decode("ascii")]
        self.issuer = issuer

    def jwt(self, subject, audience, access):
        now = int(time.time())
        header = {"alg": "RS256", "typ": "JWT", "x5c": self.x5c}
        claims = {
            "iss": self.issuer,
            "sub": subject,
            "aud": audience,
            "iat": now,
            "nbf": now - 30,  # tolerate a little clock skew
            "exp": now + TOKEN_TTL,
            "jti": secrets.token_hex(16),
            "access": access,
        }
        enc = lambda obj: b64url(json.dumps(obj, separators=(",", ":")).encode())
        signing_input = f"{enc(header)}.{enc(claims)}".encode("ascii")
        signature = self.key.sign(signing_input, padding.PKCS1v15(), hashes.SHA256())
        return signing_input.decode("ascii") + "." + b64url(signature)


def parse_scopes(values):
    """`repository:NAME:a,b` items (several params, or space-separated in one) -> list."""
    out = []
    for value in values:
        for item in value.split():
            kind, _, rest = item.partition(":")
            name, _, actions = rest.rpartition(":")
            if kind and name and actions:
                out.append((kind, name, [a for a in actions.split(",") if a]))
    return out


def grant(scopes, authenticated):
    access = []
    for kind, name, actions in scopes:
        if kind == "repository":
            allowed = actions if authenticated else [a for a in actions if a == "pull"]
        elif kind == "registry" and authenticated:
            allowed = actions  # e.g. registry:catalog:*
        else:
            allowed = []
        access.append({"type": kind, "name": name, "actions": allowed})
    return access


class TokenHandler(BaseHTTPRequestHandler):
    server_version = "strata-test-tokenserver/1"
    protocol_version = "HTTP/1.1"

    # set on the class by main()
    signer = None
    users = {}
    refresh_tokens = {}
    lock = threading.Lock()
    verbose = False

    def log_message(self, fmt, *args):
        if self.verbose:
            sys.stderr.write("tokenserver: " + (fmt % args) + "\n")

    def reply(self, status, obj, extra_headers=()):
        body = json.dumps(obj).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        for k, v in extra_headers:
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)

    def unauthorized(self, message):
        self.reply(401, {"errors": [{"code": "UNAUTHORIZED", "message": message}]},
                   [("WWW-Authenticate", 'Basic realm="strata-test-token"')])

    def check_password(self, user, password):
        expected = self.users.get(user)
        return expected is not None and secrets.compare_digest(expected, password)

    def basic_user(self):
        """'' for anonymous, the user name when the credentials are right, None when wrong."""
        header = self.headers.get("Authorization", "")
        if not header.lower().startswith("basic "):
            return ""
        try:
            user, sep, password = base64.b64decode(header[6:].strip()).decode().partition(":")
        except Exception:
            return None
        if not sep or not self.check_password(user, password):
            return None
        return user

    def issue(self, subject, service, scopes, with_refresh=False):
        token = self.signer.jwt(subject, service, grant(scopes, bool(subject)))
        body = {
            "token": token,
            "access_token": token,
            "expires_in": TOKEN_TTL,
            "issued_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        if with_refresh and subject:
            rt = secrets.token_urlsafe(24)
            with self.lock:
                self.refresh_tokens[rt] = subject
            body["refresh_token"] = rt
        self.reply(200, body)

    def do_GET(self):
        url = urlsplit(self.path)
        if url.path == "/healthz":
            self.reply(200, "ok")
            return
        if url.path != "/token":
            self.reply(404, {"errors": [{"code": "NOT_FOUND", "message": url.path}]})
            return
        q = parse_qs(url.query)
        user = self.basic_user()
        if user is None:
            self.unauthorized("wrong user name or password")
            return
        offline = q.get("offline_token", ["false"])[0].lower() == "true"
        self.issue(user, q.get("service", [""])[0], parse_scopes(q.get("scope", [])), offline)

    def do_POST(self):
        url = urlsplit(self.path)
        if url.path != "/token":
            self.reply(404, {"errors": [{"code": "NOT_FOUND", "message": url.path}]})
            return
        length = int(self.headers.get("Content-Length") or 0)
        form = parse_qs(self.rfile.read(length).decode("utf-8", "replace"))
        field = lambda k: form.get(k, [""])[0]
        grant_type = field("grant_type")
        if grant_type == "password":
            user = field("username")
            if not self.check_password(user, field("password")):
                self.unauthorized("wrong user name or password")
                return
        elif grant_type == "refresh_token":
            with self.lock:
                user = self.refresh_tokens.get(field("refresh_token"))
            if not user:
                self.unauthorized("unknown refresh token")
                return
        else:
            self.reply(400, {"error": "unsupported_grant_type"})
            return
        self.issue(user, field("service"), parse_scopes(form.get("scope", [])),
                   with_refresh=field("access_type") == "offline")


def load_users(path):
    users = {}
    with open(path) as f:
        for line in f:
            line = line.rstrip("\n")
            if line and not line.startswith("#") and ":" in line:
                user, _, password = line.partition(":")
                users[user] = password
    return users


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--listen", default="127.0.0.1:5003")
    ap.add_argument("--key", required=True, help="PEM RSA private key that signs tokens")
    ap.add_argument("--cert", required=True, help="PEM certificate of that key (sent in x5c)")
    ap.add_argument("--issuer", required=True, help="the registry's auth.token.issuer")
    ap.add_argument("--credentials", required=True, help="file of user:password lines")
    ap.add_argument("--verbose", action="store_true")
    args = ap.parse_args()

    TokenHandler.signer = Signer(args.key, args.cert, args.issuer)
    TokenHandler.users = load_users(args.credentials)
    TokenHandler.verbose = args.verbose
    host, _, port = args.listen.rpartition(":")
    server = ThreadingHTTPServer((host or "127.0.0.1", int(port)), TokenHandler)
    server.daemon_threads = True
    print(f"tokenserver: listening on {args.listen}, issuer {args.issuer}", file=sys.stderr, flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
