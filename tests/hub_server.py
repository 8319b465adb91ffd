"""A local stand-in for the Hugging Face Hub HTTP API, standard library only.

It speaks the subset of the Hub API that `huggingface_hub` 2.x and `datasets` 5.x use to create repositories, push
commits (regular files inline, LFS files through the basic LFS transfer), create branches and pull requests, list
trees and download files, so a push followed by `from_pretrained` / `load_dataset` / `ModelCard.load` can be tested
end to end without a network. State lives in memory, one snapshot of the whole tree per commit.

Clients need `HF_ENDPOINT=<server.url>`, `HF_TOKEN=<server.token>` and `HF_HUB_DISABLE_XET=1` (otherwise the client
asks for a Xet write token, which this server does not issue). `hub_environment(server)` returns these variables.
"""

from __future__ import annotations

import base64
import hashlib
import itertools
import json
import re
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, unquote, urlsplit

REPO_TYPES = {"models": "model", "datasets": "dataset", "spaces": "space"}
URL_PREFIX = {"model": "", "dataset": "datasets/", "space": "spaces/"}
# Files the real Hub stores in LFS when pushed (by extension), the rest are committed inline.
LFS_SUFFIXES = (".safetensors", ".bin", ".parquet", ".arrow", ".pt", ".ckpt", ".h5", ".onnx", ".npy", ".zip")


@dataclass
class Blob:
    content: bytes
    lfs: bool

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.content).hexdigest()

    @property
    def git_oid(self) -> str:
        return hashlib.sha1(b"blob %d\0" % len(self.content) + self.content).hexdigest()


@dataclass
class Repo:
    repo_type: str
    repo_id: str
    private: bool
    commits: dict[str, dict[str, Blob]] = field(default_factory=dict)
    refs: dict[str, str] = field(default_factory=dict)  # branch or "refs/pr/N" -> commit sha

    def resolve(self, revision: str) -> str | None:
        if revision in self.refs:
            return self.refs[revision]
        return revision if revision in self.commits else None


class HubError(Exception):
    def __init__(self, status: int, message: str, error_code: str | None = None):
        super().__init__(message)
        self.status, self.message, self.error_code = status, message, error_code


class HubState:
    """Repositories, LFS objects and the one token that may write."""

    def __init__(self, token: str):
        self.token = token
        self.repos: dict[tuple[str, str], Repo] = {}
        self.lfs_objects: dict[str, bytes] = {}
        self.lock = threading.Lock()
        self._counter = itertools.count()

    def new_sha(self, seed: str) -> str:
        return hashlib.sha1(f"{seed}-{next(self._counter)}".encode()).hexdigest()

    def repo(self, repo_type: str, repo_id: str, authorized: bool) -> Repo:
        repo = self.repos.get((repo_type, repo_id))
        if repo is None or (repo.private and not authorized):
            raise HubError(404, f"Repository Not Found for {repo_type} {repo_id!r}.", "RepoNotFound")
        return repo


class HubRequestHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: HubServer

    def log_message(self, format: str, *args) -> None:  # noqa: A002 - signature fixed by the base class
        self.server.request_log.append(f"{self.command} {self.path} -> {args[1] if len(args) > 1 else ''}")

    # ---- plumbing -------------------------------------------------------------------------------------------------
    @property
    def state(self) -> HubState:
        return self.server.state

    @property
    def authorized(self) -> bool:
        return self.headers.get("Authorization", "") == f"Bearer {self.state.token}"

    def require_write_token(self) -> None:
        header = self.headers.get("Authorization")
        if not header:
            raise HubError(401, "Invalid username or password: no token was sent.")
        if header != f"Bearer {self.state.token}":
            raise HubError(401, "Invalid credentials in Authorization header.")

    def body(self) -> bytes:
        return self.request_body

    def send(self, status: int, payload: object = None, headers: dict[str, str] | None = None, raw: bytes = b""):
        data = json.dumps(payload).encode() if payload is not None else raw
        self.send_response(status)
        if payload is not None:
            self.send_header("Content-Type", "application/json")
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def dispatch(self) -> None:
        url = urlsplit(self.path)
        query = {k: v[-1] for k, v in parse_qs(url.query).items()}
        # Read the whole body first so that an error answer leaves the keep-alive connection usable.
        self.request_body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        try:
            for method, pattern, handler in ROUTES:
                # Match before unquoting: a revision such as "refs/pr/1" arrives as the single segment "refs%2Fpr%2F1".
                match = re.fullmatch(pattern, url.path.strip("/")) if method == self.command else None
                if match:
                    arguments = {k: unquote(v) for k, v in match.groupdict().items() if v is not None}
                    return handler(self, query=query, **arguments)
            raise HubError(404, f"The local Hub server does not implement {self.command} {url.path}.")
        except HubError as error:
            headers = {"X-Error-Message": error.message}
            if error.error_code:
                headers["X-Error-Code"] = error.error_code
            self.send(error.status, {"error": error.message}, headers)

    do_GET = do_HEAD = do_POST = do_PUT = do_DELETE = dispatch

    # ---- API ------------------------------------------------------------------------------------------------------
    def whoami(self, query: dict) -> None:
        self.require_write_token()
        self.send(200, {"type": "user", "name": "mice-tester", "orgs": [], "auth": {"accessToken": {"role": "write"}}})

    def validate_yaml(self, query: dict) -> None:
        self.body()
        self.send(200, {})

    def create_repo(self, query: dict) -> None:
        self.require_write_token()
        request = json.loads(self.body())
        repo_type = request.get("type") or "model"
        repo_id = f"{request.get('organization') or 'mice-tester'}/{request['name']}"
        url = f"{self.server.url}/{URL_PREFIX[repo_type]}{repo_id}"
        with self.state.lock:
            if (repo_type, repo_id) in self.state.repos:
                # The client reads the existing repo's url from the conflict answer (create_repo(exist_ok=True)).
                message = f"You already created this {repo_type} repo: {repo_id}"
                self.send(409, {"error": message, "url": url}, {"X-Error-Message": message})
                return
            private = request.get("visibility", "public") != "public" or bool(request.get("private"))
            repo = Repo(repo_type, repo_id, private)
            first = self.state.new_sha(repo_id)
            repo.commits[first] = {
                ".gitattributes": Blob(b"*.safetensors filter=lfs diff=lfs merge=lfs -text\n", False)
            }
            repo.refs["main"] = first
            self.state.repos[(repo_type, repo_id)] = repo
        self.send(200, {"url": url, "name": repo_id})

    def repo_info(self, query: dict, kind: str, repo_id: str, revision: str = "main") -> None:
        repo = self.state.repo(REPO_TYPES[kind], repo_id, self.authorized)
        sha = self._resolve(repo, revision)
        files = repo.commits[sha]
        self.send(
            200,
            {
                "id": repo_id,
                "_id": hashlib.md5(repo_id.encode()).hexdigest()[:24],
                "author": repo_id.split("/")[0],
                "sha": sha,
                "private": repo.private,
                "disabled": False,
                "gated": False,
                "downloads": 0,
                "likes": 0,
                "tags": [],
                "lastModified": "2026-01-01T00:00:00.000Z",
                "siblings": [self._sibling(path, blob, query) for path, blob in sorted(files.items())],
            },
        )

    def list_refs(self, query: dict, kind: str, repo_id: str) -> None:
        repo = self.state.repo(REPO_TYPES[kind], repo_id, self.authorized)
        branches = [
            {"name": name, "ref": f"refs/heads/{name}", "targetCommit": sha}
            for name, sha in repo.refs.items()
            if not name.startswith("refs/pr/")
        ]
        pulls = [
            {"name": name, "ref": name, "targetCommit": sha}
            for name, sha in repo.refs.items()
            if name.startswith("refs/pr/")
        ]
        payload = {"branches": branches, "tags": [], "converts": []}
        if query.get("include_prs"):
            payload["pullRequests"] = pulls
        self.send(200, payload)

    def create_branch(self, query: dict, kind: str, repo_id: str, branch: str) -> None:
        self.require_write_token()
        repo = self.state.repo(REPO_TYPES[kind], repo_id, True)
        request = json.loads(self.body() or b"{}")
        with self.state.lock:
            if branch in repo.refs:
                raise HubError(409, f"Reference refs/heads/{branch} already exists.")
            repo.refs[branch] = self._resolve(repo, request.get("startingPoint") or "main")
        self.send(200, {})

    def preupload(self, query: dict, kind: str, repo_id: str, revision: str) -> None:
        self.require_write_token()
        self.state.repo(REPO_TYPES[kind], repo_id, True)
        files = json.loads(self.body())["files"]
        modes = [
            {
                "path": f["path"],
                "uploadMode": "lfs" if f["path"].endswith(LFS_SUFFIXES) else "regular",
                "shouldIgnore": False,
            }
            for f in files
        ]
        self.send(200, {"files": modes})

    def lfs_batch(self, query: dict, prefix: str, repo_id: str) -> None:
        self.require_write_token()
        request = json.loads(self.body())
        objects = []
        for obj in request["objects"]:
            entry = {"oid": obj["oid"], "size": obj["size"]}
            if obj["oid"] not in self.state.lfs_objects:
                entry["actions"] = {"upload": {"href": f"{self.server.url}/lfs-upload/{obj['oid']}", "header": {}}}
            objects.append(entry)
        self.send(200, {"transfer": "basic", "objects": objects})

    def lfs_upload(self, query: dict, oid: str) -> None:
        # Like the Hub's pre-signed storage URLs, the upload URL itself is the credential: no Authorization header.
        content = self.body()
        if hashlib.sha256(content).hexdigest() != oid:
            raise HubError(400, f"LFS object {oid} was uploaded with content whose sha256 differs.")
        self.state.lfs_objects[oid] = content
        self.send(200, {})

    def commit(self, query: dict, kind: str, repo_id: str, revision: str) -> None:
        self.require_write_token()
        repo = self.state.repo(REPO_TYPES[kind], repo_id, True)
        lines = [json.loads(line) for line in self.body().decode().splitlines() if line.strip()]
        create_pr = query.get("create_pr") in ("1", "true", "True")
        with self.state.lock:
            tree = dict(repo.commits[self._resolve(repo, revision)])
            for line in lines:
                value = line["value"]
                if line["key"] == "file":
                    tree[value["path"]] = Blob(base64.b64decode(value["content"]), False)
                elif line["key"] == "lfsFile":
                    if value["oid"] not in self.state.lfs_objects:
                        raise HubError(400, f"LFS object {value['oid']} for {value['path']} was never uploaded.")
                    tree[value["path"]] = Blob(self.state.lfs_objects[value["oid"]], True)
                elif line["key"] == "deletedFile":
                    tree.pop(value["path"], None)
                elif line["key"] == "deletedFolder":
                    folder = value["path"].rstrip("/") + "/"
                    tree = {p: b for p, b in tree.items() if not p.startswith(folder)}
            sha = self.state.new_sha(repo_id)
            repo.commits[sha] = tree
            payload = {"commitUrl": f"{self.server.url}/{URL_PREFIX[repo.repo_type]}{repo_id}/commit/{sha}"}
            if create_pr:
                number = 1 + sum(name.startswith("refs/pr/") for name in repo.refs)
                repo.refs[f"refs/pr/{number}"] = sha
                payload["pullRequestUrl"] = (
                    f"{self.server.url}/{URL_PREFIX[repo.repo_type]}{repo_id}/discussions/{number}"
                )
            else:
                repo.refs[revision if revision in repo.refs else "main"] = sha
        self.send(200, {**payload, "commitOid": sha, "commitMessage": lines[0]["value"].get("summary", "")})

    def tree(self, query: dict, kind: str, repo_id: str, revision: str, path: str = "") -> None:
        repo = self.state.repo(REPO_TYPES[kind], repo_id, self.authorized)
        files = repo.commits[self._resolve(repo, revision)]
        path = path.strip("/")
        prefix = f"{path}/" if path else ""
        below = {p: b for p, b in files.items() if p.startswith(prefix)}
        if path and not below:
            raise HubError(404, f"Directory {path!r} not found at revision {revision}.", "EntryNotFound")
        entries: dict[str, dict] = {}
        for file_path, blob in sorted(below.items()):
            parts = file_path[len(prefix) :].split("/")
            depth = len(parts) if query.get("recursive") in ("1", "true", "True") else 1
            for level in range(1, min(depth, len(parts) - 1) + 1):
                folder = prefix + "/".join(parts[:level])
                entries.setdefault(
                    folder, {"type": "directory", "oid": hashlib.sha1(folder.encode()).hexdigest(), "path": folder}
                )
            if len(parts) <= depth:
                entries[file_path] = self._tree_entry(file_path, blob)
        self.send(200, list(entries.values()))

    def paths_info(self, query: dict, kind: str, repo_id: str, revision: str) -> None:
        repo = self.state.repo(REPO_TYPES[kind], repo_id, self.authorized)
        files = repo.commits[self._resolve(repo, revision)]
        body = self.body()
        if self.headers.get("Content-Type", "").startswith("application/json"):
            paths = json.loads(body)["paths"]
        else:
            paths = parse_qs(body.decode()).get("paths", [])
        entries = []
        for path in paths:
            path = path.strip("/")
            if path in files:
                entries.append(self._tree_entry(path, files[path]))
            elif any(p.startswith(path + "/") for p in files):
                entries.append({"type": "directory", "oid": hashlib.sha1(path.encode()).hexdigest(), "path": path})
        self.send(200, entries)

    def resolve_file(self, query: dict, prefix: str, repo_id: str, revision: str, path: str) -> None:
        repo = self.state.repo(URL_PREFIX_TO_TYPE[prefix], repo_id, self.authorized)
        sha = self._resolve(repo, revision)
        blob = repo.commits[sha].get(path)
        if blob is None:
            raise HubError(404, f"Entry {path!r} not found in {repo_id} at {revision}.", "EntryNotFound")
        headers = {
            "X-Repo-Commit": sha,
            "ETag": f'"{blob.sha256 if blob.lfs else blob.git_oid}"',
            "Accept-Ranges": "bytes",
        }
        if blob.lfs:
            headers.update({"X-Linked-Etag": f'"{blob.sha256}"', "X-Linked-Size": str(len(blob.content))})
        content, status = blob.content, 200
        byte_range = re.fullmatch(r"bytes=(\d*)-(\d*)", self.headers.get("Range", ""))
        if byte_range and self.command == "GET":
            start = int(byte_range[1]) if byte_range[1] else max(len(content) - int(byte_range[2]), 0)
            end = int(byte_range[2]) if byte_range[1] and byte_range[2] else len(content) - 1
            headers["Content-Range"] = f"bytes {start}-{min(end, len(content) - 1)}/{len(content)}"
            content, status = content[start : end + 1], 206
        self.send(status, raw=content, headers=headers)

    # ---- helpers --------------------------------------------------------------------------------------------------
    def _resolve(self, repo: Repo, revision: str) -> str:
        sha = repo.resolve(revision)
        if sha is None:
            raise HubError(404, f"Invalid rev id: {revision}", "RevisionNotFound")
        return sha

    @staticmethod
    def _tree_entry(path: str, blob: Blob) -> dict:
        entry = {"type": "file", "oid": blob.git_oid, "size": len(blob.content), "path": path}
        if blob.lfs:
            entry["lfs"] = {"oid": blob.sha256, "size": len(blob.content), "pointerSize": 134}
        return entry

    @staticmethod
    def _sibling(path: str, blob: Blob, query: dict) -> dict:
        sibling: dict = {"rfilename": path}
        if query.get("blobs") in ("1", "true", "True"):
            sibling.update({"size": len(blob.content), "blobId": blob.git_oid})
            if blob.lfs:
                sibling["lfs"] = {"sha256": blob.sha256, "size": len(blob.content), "pointerSize": 134}
        return sibling


URL_PREFIX_TO_TYPE = {"": "model", "datasets/": "dataset", "spaces/": "space"}
_REPO = r"(?P<repo_id>[^/]+/[^/]+)"
_KIND = r"(?P<kind>models|datasets|spaces)"
_PREFIX = r"(?P<prefix>(?:datasets/|spaces/)?)"
ROUTES = [
    ("GET", r"api/whoami-v2", HubRequestHandler.whoami),
    ("POST", r"api/validate-yaml", HubRequestHandler.validate_yaml),
    ("POST", r"api/repos/create", HubRequestHandler.create_repo),
    ("GET", rf"api/{_KIND}/{_REPO}", HubRequestHandler.repo_info),
    ("GET", rf"api/{_KIND}/{_REPO}/revision/(?P<revision>[^/]+)", HubRequestHandler.repo_info),
    ("GET", rf"api/{_KIND}/{_REPO}/refs", HubRequestHandler.list_refs),
    ("POST", rf"api/{_KIND}/{_REPO}/branch/(?P<branch>[^/]+)", HubRequestHandler.create_branch),
    ("POST", rf"api/{_KIND}/{_REPO}/preupload/(?P<revision>[^/]+)", HubRequestHandler.preupload),
    ("POST", rf"api/{_KIND}/{_REPO}/commit/(?P<revision>[^/]+)", HubRequestHandler.commit),
    ("GET", rf"api/{_KIND}/{_REPO}/tree/(?P<revision>[^/]+)(?:/(?P<path>.*))?", HubRequestHandler.tree),
    ("POST", rf"api/{_KIND}/{_REPO}/paths-info/(?P<revision>[^/]+)", HubRequestHandler.paths_info),
    ("POST", rf"{_PREFIX}{_REPO}\.git/info/lfs/objects/batch", HubRequestHandler.lfs_batch),
    ("PUT", r"lfs-upload/(?P<oid>[0-9a-f]{64})", HubRequestHandler.lfs_upload),
    ("GET", rf"{_PREFIX}{_REPO}/resolve/(?P<revision>[^/]+)/(?P<path>.+)", HubRequestHandler.resolve_file),
    ("HEAD", rf"{_PREFIX}{_REPO}/resolve/(?P<revision>[^/]+)/(?P<path>.+)", HubRequestHandler.resolve_file),
]


class HubServer(ThreadingHTTPServer):
    """`with HubServer() as hub:` serves on 127.0.0.1 at a free port in a background thread until the block ends."""

    daemon_threads = True

    def __init__(self, token: str = "hf_local_test_token"):
        super().__init__(("127.0.0.1", 0), HubRequestHandler)
        self.state = HubState(token)
        self.request_log: list[str] = []
        self.url = f"http://127.0.0.1:{self.server_address[1]}"
        self._thread = threading.Thread(target=self.serve_forever, name="local-hub", daemon=True)

    def __enter__(self) -> HubServer:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.shutdown()
        self.server_close()
        self._thread.join()


def hub_environment(server: HubServer, token: str | None = "server") -> dict[str, str]:
    """Environment variables that point huggingface_hub, transformers and datasets at `server`.

    `token="server"` uses the server's write token; `None` leaves the token out entirely.
    """
    env = {
        "HF_ENDPOINT": server.url,
        "HF_HUB_OFFLINE": "0",
        "HF_DATASETS_OFFLINE": "0",
        "TRANSFORMERS_OFFLINE": "0",
        "HF_HUB_DISABLE_XET": "1",
        "HF_HUB_DISABLE_TELEMETRY": "1",
        "HF_HUB_DISABLE_PROGRESS_BARS": "1",
        "HF_HUB_DISABLE_IMPLICIT_TOKEN": "0",
    }
    if token is not None:
        env["HF_TOKEN"] = server.state.token if token == "server" else token
    return env
