# Copyright 2026 The clarity_hf authors. Apache-2.0.
"""A loopback stand-in for the few Hub API endpoints that `HfApi.create_repo` / `create_branch` / `upload_folder`
call, for tests: it records every request and keeps the committed files in memory."""

from __future__ import annotations

import base64
import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class HubStandIn:
    def __init__(self):
        self.requests: list[tuple[str, str]] = []
        self.repos: dict[str, dict] = {}
        self.commits: list[dict] = []
        self.branches: list[tuple[str, str]] = []
        self.validated_yaml: list[dict] = []
        stand_in = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # quiet
                pass

            def _reply(self, status: int, payload: dict) -> None:
                body = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def _body(self) -> bytes:
                return self.rfile.read(int(self.headers.get("Content-Length") or 0))

            def do_GET(self):
                stand_in.requests.append(("GET", self.path))
                self._reply(404, {"error": f"not implemented: GET {self.path}"})

            def do_POST(self):
                stand_in.requests.append(("POST", self.path))
                body = self._body()
                path = self.path.split("?")[0]
                if path == "/api/repos/create":
                    data = json.loads(body)
                    repo = f"{data.get('organization') or 'user'}/{data['name']}" if "/" not in data["name"] else data["name"]
                    stand_in.repos[repo] = {**data, "authorization": self.headers.get("authorization")}
                    return self._reply(200, {"url": f"http://{self.headers['Host']}/{repo}", "name": repo})
                if path == "/api/validate-yaml":
                    stand_in.validated_yaml.append(json.loads(body))
                    return self._reply(200, {"errors": [], "warnings": []})
                match = re.fullmatch(r"/api/models/([^/]+/[^/]+)/preupload/(.+)", path)
                if match:
                    files = json.loads(body)["files"]
                    return self._reply(
                        200,
                        {"files": [{"path": f["path"], "uploadMode": "regular", "shouldIgnore": False} for f in files]},
                    )
                match = re.fullmatch(r"/api/models/([^/]+/[^/]+)/branch/(.+)", path)
                if match:
                    stand_in.branches.append((match.group(1), match.group(2)))
                    return self._reply(200, {})
                match = re.fullmatch(r"/api/models/([^/]+/[^/]+)/commit/(.+)", path)
                if match:
                    lines = [json.loads(line) for line in body.decode().splitlines() if line.strip()]
                    header = next(item["value"] for item in lines if item["key"] == "header")
                    files = {
                        item["value"]["path"]: base64.b64decode(item["value"]["content"])
                        for item in lines
                        if item["key"] == "file"
                    }
                    query = self.path.split("?", 1)[1] if "?" in self.path else ""
                    stand_in.commits.append(
                        {"repo": match.group(1), "revision": match.group(2), "header": header, "files": files,
                         "query": query, "other_keys": [i["key"] for i in lines if i["key"] not in ("header", "file")]}
                    )
                    host = self.headers["Host"]
                    return self._reply(
                        200,
                        {
                            "commitUrl": f"http://{host}/{match.group(1)}/commit/{'0' * 40}",
                            "commitOid": "0" * 40,
                            "pullRequestUrl": f"http://{host}/{match.group(1)}/discussions/1" if "create_pr=1" in query else None,
                        },
                    )
                return self._reply(404, {"error": f"not implemented: POST {self.path}"})

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.endpoint = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    def __enter__(self) -> HubStandIn:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)
