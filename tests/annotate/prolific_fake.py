"""A local fake of the Prolific API endpoints unitscope uses: a real HTTP server on 127.0.0.1 (a random
port) in a thread, so the client's requests, retries and timeouts are the real ones.

It keeps studies, submissions, bulk bonus payments and participant groups in memory, applies the state
rules Prolific documents (a draft is published, an active study paused, started, stopped; a submission
awaiting review is approved or rejected once, a rejection needs a category and a message of 100 characters),
records every request (method, path, query, JSON body, Authorization header), and answers scripted faults:
429 and 500 (nothing done), `slow` (done, but the answer comes after the client gave up) and `hang`
(nothing done, no answer in time).
"""

from __future__ import annotations

import itertools
import json
import re
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

TOKEN = "test-token"
PREFIX = "/api/v1/"


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, str]
    body: Any
    authorization: str


@dataclass
class Fault:
    method: str
    path: re.Pattern[str]
    kind: str  # "429", "500", "slow" or "hang"
    times: int


@dataclass
class FakeProlific:
    sleep_s: float = 1.5
    """How long `slow` and `hang` keep the client waiting: more than the client's timeout."""
    requests: list[Request] = field(default_factory=list)
    studies: dict[str, dict[str, Any]] = field(default_factory=dict)
    submissions: dict[str, dict[str, Any]] = field(default_factory=dict)
    bonus_setups: dict[str, dict[str, Any]] = field(default_factory=dict)
    groups: dict[str, set[str]] = field(default_factory=dict)
    bulk_refuses: set[str] = field(default_factory=set)
    """Submissions a bulk approve leaves as they are (Prolific approves in the background, one by one)."""
    faults: list[Fault] = field(default_factory=list)
    _ids: Iterator[int] = field(default_factory=lambda: itertools.count(1))
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def start(self) -> None:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                return

            def _handle(self) -> None:
                fake._serve(self)

            do_GET = do_POST = do_DELETE = do_PATCH = _handle

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}{PREFIX}"

    # Scripting.
    def fail(self, method: str, path: str, kind: str, times: int = 1) -> None:
        """The next `times` requests `method` to a path matching the regex `path` meet fault `kind`."""
        self.faults.append(Fault(method, re.compile(path), kind, times))

    def add_submission(self, submission_id: str, participant_id: str, study_id: str, status: str) -> None:
        self.submissions[submission_id] = {
            "id": submission_id,
            "participant_id": participant_id,
            "study_id": study_id,
            "status": status,
            "bonus_payments": [],
        }

    def calls(self, method: str | None = None, path: str | None = None) -> list[Request]:
        """The recorded requests, optionally those with `method` whose path matches the regex `path`."""
        return [
            r
            for r in self.requests
            if (method is None or r.method == method) and (path is None or re.fullmatch(path, r.path))
        ]

    # Serving.
    def _serve(self, handler: BaseHTTPRequestHandler) -> None:
        split = urlsplit(handler.path)
        length = int(handler.headers.get("Content-Length") or 0)
        raw = handler.rfile.read(length) if length else b""
        body = json.loads(raw) if raw else None
        path = split.path[len(PREFIX) :] if split.path.startswith(PREFIX) else split.path
        request = Request(
            method=handler.command,
            path=path,
            query={k: v[0] for k, v in parse_qs(split.query).items()},
            body=body,
            authorization=handler.headers.get("Authorization", ""),
        )
        with self._lock:
            self.requests.append(request)
            fault = self._fault(request)
        if fault in ("429", "500"):
            self._answer(handler, int(fault), {"error": {"detail": f"scripted {fault}"}})
            return
        if fault == "hang":
            time.sleep(self.sleep_s)
            self._answer(handler, 504, {"error": {"detail": "scripted hang"}})
            return
        if request.authorization != f"Token {TOKEN}":
            self._answer(handler, 401, {"error": {"detail": "Invalid token."}})
            return
        with self._lock:
            status, reply = self._route(request)
        if fault == "slow":
            time.sleep(self.sleep_s)
        self._answer(handler, status, reply)

    def _fault(self, request: Request) -> str | None:
        for fault in self.faults:
            if fault.times > 0 and fault.method == request.method and fault.path.fullmatch(request.path):
                fault.times -= 1
                return fault.kind
        return None

    @staticmethod
    def _answer(handler: BaseHTTPRequestHandler, status: int, reply: Any) -> None:
        data = json.dumps(reply).encode()
        try:
            handler.send_response(status)
            handler.send_header("Content-Type", "application/json")
            handler.send_header("Content-Length", str(len(data)))
            handler.end_headers()
            handler.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):
            return

    def _route(self, r: Request) -> tuple[int, Any]:
        m = r.method
        if m == "POST" and r.path == "studies/":
            study_id = f"study{next(self._ids)}"
            self.studies[study_id] = {**r.body, "id": study_id, "status": "UNPUBLISHED"}
            return 201, self.studies[study_id]
        if found := re.fullmatch(r"studies/([^/]+)/", r.path):
            study = self.studies.get(found[1])
            return (200, study) if study else (404, {"error": {"detail": "Not found."}})
        if found := re.fullmatch(r"studies/([^/]+)/transition/", r.path):
            return self._study_transition(found[1], r.body["action"])
        if m == "GET" and r.path == "submissions/":
            return self._submission_list(r.query)
        if found := re.fullmatch(r"submissions/([^/]+)/transition/", r.path):
            return self._submission_transition(found[1], r.body)
        if m == "POST" and r.path == "submissions/bulk-approve/":
            for submission_id in r.body["submission_ids"]:
                submission = self.submissions.get(submission_id)
                if (
                    submission
                    and submission["status"] == "AWAITING REVIEW"
                    and submission_id not in self.bulk_refuses
                ):
                    submission["status"] = "APPROVED"
            return 200, "The request to bulk approve has been made successfully."
        if m == "POST" and r.path == "submissions/bonus-payments/":
            return self._bonus_setup(r.body)
        if found := re.fullmatch(r"submissions/([^/]+)/", r.path):
            submission = self.submissions.get(found[1])
            return (200, submission) if submission else (404, {"error": {"detail": "Not found."}})
        if found := re.fullmatch(r"bulk-bonus-payments/([^/]+)/pay/", r.path):
            return self._bonus_pay(found[1])
        if found := re.fullmatch(r"participant-groups/([^/]+)/participants/", r.path):
            group = self.groups.setdefault(found[1], set())
            ids = set(r.body["participant_ids"])
            if m == "POST":
                group |= ids
            else:
                group -= ids
            return 200, {"results": [{"participant_id": p} for p in sorted(group)]}
        return 404, {"error": {"detail": f"no route {m} {r.path}"}}

    def _study_transition(self, study_id: str, action: str) -> tuple[int, Any]:
        study = self.studies.get(study_id)
        if study is None:
            return 404, {"error": {"detail": "Not found."}}
        moves = {
            ("PUBLISH", "UNPUBLISHED"): "ACTIVE",
            ("PAUSE", "ACTIVE"): "PAUSED",
            ("START", "PAUSED"): "ACTIVE",
            ("STOP", "ACTIVE"): "AWAITING REVIEW",
            ("STOP", "PAUSED"): "AWAITING REVIEW",
        }
        new = moves.get((action, study["status"]))
        if new is None:
            return 400, {"error": {"detail": f"Cannot {action} a study that is {study['status']}."}}
        study["status"] = new
        return 200, study

    def _submission_list(self, query: dict[str, str]) -> tuple[int, Any]:
        found = [s for s in self.submissions.values() if s["study_id"] == query.get("study")]
        page, size = int(query.get("page", 1)), int(query.get("page_size", 20))
        chunk = found[(page - 1) * size : page * size]
        following = {"href": f"{PREFIX}submissions/?page={page + 1}"} if page * size < len(found) else None
        return 200, {
            "results": [{k: s[k] for k in ("id", "participant_id", "status")} for s in chunk],
            "_links": {"next": following},
        }

    def _submission_transition(self, submission_id: str, body: dict[str, Any]) -> tuple[int, Any]:
        submission = self.submissions.get(submission_id)
        if submission is None:
            return 404, {"error": {"detail": "Not found."}}
        action = body.get("action")
        if action == "APPROVE" and submission["status"] == "APPROVED":
            return 200, submission
        if submission["status"] != "AWAITING REVIEW":
            return 400, {"error": {"detail": f"Cannot {action} a submission that is {submission['status']}."}}
        if action == "REJECT":
            if len(body.get("message", "")) < 100 or not body.get("rejection_category"):
                return 400, {"error": {"detail": "A rejection needs a category and a 100-character message."}}
            submission["status"] = "REJECTED"
        elif action == "APPROVE":
            submission["status"] = "APPROVED"
        else:
            return 400, {"error": {"detail": f"Unknown action {action!r}."}}
        return 200, submission

    def _bonus_setup(self, body: dict[str, Any]) -> tuple[int, Any]:
        lines = [line.split(",") for line in body["csv_bonuses"].strip().split("\n")]
        unknown = [s for s, _ in lines if self.submissions.get(s, {}).get("study_id") != body["study_id"]]
        if unknown:
            return 400, {"error": {"detail": f"Not in the study: {', '.join(unknown)}"}}
        setup_id = f"bonus{next(self._ids)}"
        self.bonus_setups[setup_id] = {"lines": lines, "pays": 0}
        total = sum(Decimal(amount) for _, amount in lines)
        return 201, {"id": setup_id, "study": body["study_id"], "amount": float(total), "fees": 0, "vat": 0}

    def _bonus_pay(self, setup_id: str) -> tuple[int, Any]:
        setup = self.bonus_setups.get(setup_id)
        if setup is None:
            return 404, {"error": {"detail": "Not found."}}
        setup["pays"] += 1
        for submission_id, amount in setup["lines"]:
            self.submissions[submission_id]["bonus_payments"].append(int(Decimal(amount) * 100))
        return 202, f"Bulk bonus payment with ID {setup_id} is being processed asynchronously."
