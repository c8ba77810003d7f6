"""A stand-in for the Hugging Face Hub on loopback, with the Hub's URL layout and headers (as
huggingface_hub's file_download.py reads them), for `lensgrid pull` and `--model NAME` tests.

Two HTTP servers: the Hub (HF_ENDPOINT) and a "CDN" on another port (another origin).
  HEAD|GET /{repo}/resolve/{revision}/{file}
    - a renamed repo: 307 with a *relative* Location to the new name (as the Hub does for gpt2);
    - a private repo without `Authorization: Bearer TOKEN`: 401 (X-Error-Code RepositoryNotFound);
    - an unknown revision or file: 404 (X-Error-Code RevisionNotFound / EntryNotFound);
    - an LFS file (*.safetensors): 302 to the CDN, with X-Repo-Commit, ETag (git sha1),
      X-Linked-Etag (its sha256) and X-Linked-Size;
    - any other file: 200 with X-Repo-Commit, ETag (git sha1), Content-Length (and the body).
  GET /blobs/{sha256} on the CDN: the blob, with Range support (206 + Content-Range).
Every request is recorded (method, path, the Authorization header's presence and value, Range,
body bytes sent), for tests to count bytes and check where the token went.
Knobs: `stall_after[sha] = n` sends n bytes of that blob then holds the connection open until
`release` is set (a download to kill halfway); `corrupt.add(sha)` flips one byte of that blob.

    hub = FakeHub()
    hub.add_repo("lensgrid-test/tiny", {"main": COMMIT}, "/path/to/model_dir")
    hub.start(); os.environ["HF_ENDPOINT"] = hub.endpoint; ...; hub.stop()

As a program (the deploy test starts it for its pods):
    fake_hub.py --repo ORG/NAME=MODEL_DIR [--token T] [--rename OLD=NEW] --port-file F
"""
import argparse
import hashlib
import http.server
import os
import sys
import threading
import urllib.parse

LFS_SUFFIXES = (".safetensors",)


def git_sha1(data):
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


class Repo:
    def __init__(self, commits, files, token=None):
        self.commits = dict(commits)   # revision (branch/tag) -> 40-hex commit
        self.files = dict(files)       # name -> bytes (same files at every commit unless given)
        self.token = token             # private when set
        self.by_commit = {}            # commit -> {name: bytes} overriding files


class FakeHub:
    def __init__(self):
        self.repos = {}
        self.renamed = {}
        self.blobs = {}
        self.requests = []
        self.stall_after = {}
        self.corrupt = set()
        self.release = threading.Event()
        self.stalled = threading.Event()
        self.lock = threading.Lock()
        self._servers = []

    def add_repo(self, repo_id, commits, model_dir=None, files=None, token=None):
        files = dict(files or {})
        if model_dir is not None:
            for name in sorted(os.listdir(model_dir)):
                if name in ("config.json", "model.safetensors", "vocab.json", "merges.txt"):
                    with open(os.path.join(model_dir, name), "rb") as f:
                        files[name] = f.read()
        repo = Repo(commits, files, token)
        self.repos[repo_id] = repo
        for data in files.values():
            self.blobs[hashlib.sha256(data).hexdigest()] = data
        return repo

    def set_commit_files(self, repo_id, commit, files):
        self.repos[repo_id].by_commit[commit] = files
        for data in files.values():
            self.blobs[hashlib.sha256(data).hexdigest()] = data

    def record(self, **entry):
        with self.lock:
            self.requests.append(entry)
        return entry

    def cdn_bytes(self, sha):
        with self.lock:
            return sum(r["sent"] for r in self.requests if r["server"] == "cdn" and sha in r["path"])

    def start(self):
        hub, cdn = _server(self, "hub"), _server(self, "cdn")
        self._servers = [hub, cdn]
        for s in self._servers:
            threading.Thread(target=s.serve_forever, daemon=True).start()
        self.endpoint = "http://127.0.0.1:%d" % hub.server_address[1]
        self.cdn = "http://127.0.0.1:%d" % cdn.server_address[1]
        return self

    def stop(self):
        self.release.set()
        for s in self._servers:
            s.shutdown()
            s.server_close()


def _server(hub, role):
    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args):
            pass

        def do_HEAD(self):
            self.handle_any(body=False)

        def do_GET(self):
            self.handle_any(body=True)

        def answer(self, status, headers, data=b"", entry=None, body=True, stall=None):
            self.send_response(status)
            for k, v in headers.items():
                self.send_header(k, v)
            if "Content-Length" not in headers:
                self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            if not body or not data:
                return
            if stall is not None and stall < len(data):
                self.wfile.write(data[:stall])
                self.wfile.flush()
                entry["sent"] += stall
                hub.stalled.set()
                hub.release.wait(120)
                self.close_connection = True
                return
            self.wfile.write(data)
            if entry is not None:
                entry["sent"] += len(data)

        def handle_any(self, body):
            auth = self.headers.get("Authorization")
            path = urllib.parse.unquote(urllib.parse.urlsplit(self.path).path)
            entry = hub.record(server=role, method=self.command, path=path, auth=auth,
                               range=self.headers.get("Range"), sent=0)
            if role == "cdn":
                return self.cdn(path, entry, body)
            parts = path.lstrip("/").split("/")
            if len(parts) < 5 or parts[2] != "resolve":
                return self.answer(404, {"X-Error-Code": "RepoNotFound"}, b"not found")
            repo_id, revision, name = "/".join(parts[:2]), parts[3], "/".join(parts[4:])
            if repo_id in hub.renamed:
                new = "/%s/resolve/%s/%s" % (hub.renamed[repo_id], urllib.parse.quote(revision, safe=""),
                                             urllib.parse.quote(name))
                return self.answer(307, {"Location": new}, b"")
            repo = hub.repos.get(repo_id)
            if repo is None or (repo.token and auth != "Bearer " + repo.token):
                return self.answer(401, {"X-Error-Code": "RepositoryNotFound",
                                         "X-Error-Message": "Invalid username or password."},
                                   b"Invalid username or password.", body=body)
            commit = repo.commits.get(revision, revision)
            if commit not in repo.commits.values():
                return self.answer(404, {"X-Error-Code": "RevisionNotFound"}, b"", body=body)
            files = repo.by_commit.get(commit, repo.files)
            if name not in files:
                return self.answer(404, {"X-Error-Code": "EntryNotFound", "X-Repo-Commit": commit},
                                   b"Entry not found", body=body)
            data = files[name]
            headers = {"X-Repo-Commit": commit, "ETag": '"%s"' % git_sha1(data)}
            if name.endswith(LFS_SUFFIXES):
                sha = hashlib.sha256(data).hexdigest()
                headers.update({"X-Linked-Etag": '"%s"' % sha, "X-Linked-Size": str(len(data)),
                                "Location": "%s/blobs/%s?X-Amz-Signature=abc" % (hub.cdn, sha)})
                return self.answer(302, headers, b"", body=body)
            return self.answer(200, headers, data, entry, body=body)

        def cdn(self, path, entry, body):
            sha = path.rsplit("/", 1)[-1]
            data = hub.blobs.get(sha)
            if data is None:
                return self.answer(404, {}, b"no such blob")
            if sha in hub.corrupt:
                data = bytearray(data)
                data[len(data) // 2] ^= 0x01
                data = bytes(data)
            start = 0
            rng = self.headers.get("Range")
            if rng and rng.startswith("bytes=") and rng.endswith("-"):
                start = int(rng[6:-1])
            if start >= len(data) and start > 0:
                return self.answer(416, {"Content-Range": "bytes */%d" % len(data)}, b"")
            headers = {"Accept-Ranges": "bytes", "Content-Length": str(len(data) - start),
                       "ETag": '"%s"' % sha}
            if start:
                headers["Content-Range"] = "bytes %d-%d/%d" % (start, len(data) - 1, len(data))
            stall = hub.stall_after.pop(sha, None) if body else None
            self.answer(206 if start else 200, headers, data[start:], entry, body=body, stall=stall)

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    return server


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--repo", action="append", default=[], help="ORG/NAME=MODEL_DIR")
    p.add_argument("--commit", default="5" * 40)
    p.add_argument("--token")
    p.add_argument("--rename", action="append", default=[], help="OLD=NEW")
    p.add_argument("--port-file", required=True)
    args = p.parse_args()
    hub = FakeHub()
    for spec in args.repo:
        repo_id, model_dir = spec.split("=", 1)
        hub.add_repo(repo_id, {"main": args.commit}, model_dir, token=args.token)
    for spec in args.rename:
        old, new = spec.split("=", 1)
        hub.renamed[old] = new
    hub.start()
    tmp = args.port_file + ".tmp"
    with open(tmp, "w") as f:
        f.write(hub.endpoint + "\n")
    os.rename(tmp, args.port_file)
    print("fake hub on", hub.endpoint, "cdn", hub.cdn, flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    sys.exit(main())
