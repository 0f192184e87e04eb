"""A simulated crowd that answers a batch through the real worker pages (HTTP), for demos, tests and load.

`crowd_simulate` reads the tasks from the database only to know each unit's true concept and which images
a task shows; every answer goes through the same URLs a person's browser uses (start page, next task,
accept, answer form with its CSRF token), either in-process with `django.test.Client` or over real HTTP
to a running server (`client` as a base URL) that shares this database. The answers themselves come from
`agreement.simulation`.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from http.cookiejar import CookieJar
from typing import Any, Protocol
from urllib import error as urlerror
from urllib import parse, request

from django.conf import settings
from django.urls import Resolver404, resolve, reverse
from tqdm import tqdm

from agreement import simulation, twoafc
from agreement.broden import human_category_of
from agreement.words import dissection_word
from annotate import selectors
from annotate.errors import AnnotateError
from annotate.models import Batch, Provider, Task
from annotate.providers import prolific
from annotate.selectors import comparison as comparison_selectors
from annotate.services import assignment_accept, crowd_worker_create
from annotate.services.twoafc import twoafc_answer_submit, twoafc_trial_serve

YES, NO = "yes", "no"


class SimulationError(AnnotateError):
    """The simulated crowd cannot work on this batch, or a page answered unexpectedly (message says which)."""

    status = 400


@dataclass(frozen=True)
class Page:
    status: int
    location: str
    body: str


class Browser(Protocol):
    """One worker's browser: cookies kept, redirects not followed (the simulator reads each Location)."""

    def get(self, path: str) -> Page: ...

    def post(self, path: str, data: Mapping[str, Any]) -> Page: ...


def _in_process_host() -> str:
    """A host name ALLOWED_HOSTS accepts, so that in-process requests pass the same checks as real ones."""
    for host in settings.ALLOWED_HOSTS:
        name = "localhost" if host == "*" else host.lstrip(".")
        if name:
            return name
    return "localhost"


class _TestClientBrowser:
    """In-process: the real URLs, middleware and views, without a server. Requests are HTTPS to an allowed
    host with CSRF enforced (token and Referer), so production settings (SSL redirect) let them through.
    Each simulated person comes from an address of their own (TEST-NET-2, 198.51.100.0/24), as people do,
    so the per-IP throttles count each of them apart."""

    def __init__(self, number: int = 0) -> None:
        from django.test import Client

        self.host = _in_process_host()
        self.client = Client(
            enforce_csrf_checks=True, HTTP_HOST=self.host, REMOTE_ADDR=f"198.51.100.{number % 254 + 1}"
        )

    def _csrf(self) -> str:
        cookie = self.client.cookies.get("csrftoken")
        return cookie.value if cookie else ""

    def get(self, path: str) -> Page:
        response = self.client.get(path, secure=True)
        return Page(response.status_code, response.get("Location", ""), response.content.decode())

    def post(self, path: str, data: Mapping[str, Any]) -> Page:
        response = self.client.post(
            path,
            {**data, "csrfmiddlewaretoken": self._csrf()},
            secure=True,
            headers={"referer": f"https://{self.host}{path}"},
        )
        return Page(response.status_code, response.get("Location", ""), response.content.decode())


class _NoRedirect(request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


class _HttpBrowser:
    """Over real HTTP (urllib) against a running server at `base_url`."""

    def __init__(self, base_url: str, timeout: float = 30.0) -> None:
        self.base_url = base_url.rstrip("/")
        self.cookies = CookieJar()
        self.opener = request.build_opener(request.HTTPCookieProcessor(self.cookies), _NoRedirect())
        self.timeout = timeout

    def _open(self, req: request.Request) -> Page:
        try:
            with self.opener.open(req, timeout=self.timeout) as response:
                return Page(response.status, response.headers.get("Location", ""), response.read().decode())
        except urlerror.HTTPError as exc:
            return Page(exc.code, exc.headers.get("Location", ""), exc.read().decode(errors="replace"))
        except urlerror.URLError as exc:
            raise SimulationError(f"{req.full_url}: cannot reach the server ({exc.reason})") from None

    def get(self, path: str) -> Page:
        return self._open(request.Request(self.base_url + path))

    def post(self, path: str, data: Mapping[str, Any]) -> Page:
        token = next((c.value for c in self.cookies if c.name == "csrftoken"), "")
        body = parse.urlencode({**data, "csrfmiddlewaretoken": token}, doseq=True).encode()
        return self._open(
            request.Request(
                self.base_url + path, data=body, method="POST", headers={"Referer": self.base_url + path}
            )
        )


def _browser_factory(client: str | None) -> Callable[[int], Browser]:
    """browser(n) for the n-th simulated person."""
    if client is None:
        return _TestClientBrowser
    if not re.match(r"^https?://[^/]+", client):
        raise SimulationError(f"URL {client!r}: expected http(s)://host[:port]")
    return lambda number: _HttpBrowser(client)


@dataclass
class SimulationResult:
    """What the simulated crowd did: answers stored per worker, and who stopped early and why."""

    submitted: int = 0
    per_worker: dict[str, int] = field(default_factory=dict)
    stopped: dict[str, str] = field(default_factory=dict)


def _true_unit(task: Task, images: int) -> simulation.TrueUnit:
    """The unit's true concept: a gold task's known answer, else its dissection label mapped to the six
    human categories."""
    unit = task.unit
    key = str(unit.pk)
    if task.is_gold and task.gold_category and task.gold_words:
        return simulation.TrueUnit(key, task.gold_category, tuple(task.gold_words), images=images)
    label, category, note = comparison_selectors.unit_dissection(unit)
    if label is None or category is None:
        raise SimulationError(
            note
            or f"{unit.layer} unit {unit.number}: no gold answer and no dissection label, "
            "so the simulated crowd does not know its concept"
        )
    word = dissection_word(label)
    return simulation.TrueUnit(key, human_category_of(category, label), (word,), images=images)


@dataclass(frozen=True)
class _Plan:
    """Every worker's answer to every task of the batch, decided up front (seeded)."""

    label: dict[tuple[str, str], dict[str, Any]]
    verify: dict[tuple[str, str], bool]


def _plan(batch: Batch, workers: Sequence[simulation.SimulatedWorker], seed: int) -> _Plan:
    tasks = list(batch.tasks.select_related("unit__run", "batch").order_by("position"))
    truths: dict[str, simulation.TrueUnit] = {}
    ranks_of: dict[str, list[int]] = {}
    for task in tasks:
        ranks = selectors.task_image_ranks(task=task)
        if not ranks:
            raise SimulationError(f"{task.unit.layer} unit {task.unit.number}: no images to show")
        truth = _true_unit(task, len(ranks))
        truths.setdefault(truth.unit_key, truth)
        ranks_of[str(task.public_id)] = ranks
    label_tasks = [task for task in tasks if task.kind == Task.Kind.LABEL]
    verify_tasks = [task for task in tasks if task.kind == Task.Kind.VERIFY]
    label: dict[tuple[str, str], dict[str, Any]] = {}
    if label_tasks:
        units = [truths[str(pk)] for pk in dict.fromkeys(task.unit_id for task in label_tasks)]
        answers = {(a.worker, a.unit_key): a for a in simulation.simulate_answers(units, workers, seed=seed)}
        for task in label_tasks:
            ranks = ranks_of[str(task.public_id)]
            for worker in workers:
                answer = answers[(worker.name, str(task.unit_id))]
                label[(worker.name, str(task.public_id))] = {
                    "words": answer.words,
                    "category": answer.category,
                    "rejected": [str(ranks[position]) for position in answer.rejected],
                }
    verify: dict[tuple[str, str], bool] = {}
    if verify_tasks:
        candidates = [
            simulation.Candidate(str(t.unit_id), t.candidate_source, t.candidate_label) for t in verify_tasks
        ]
        units = [truths[str(pk)] for pk in dict.fromkeys(task.unit_id for task in verify_tasks)]
        judgements = simulation.simulate_verification(units, candidates, workers, seed=seed + 1)
        for position, task in enumerate(verify_tasks):
            for k, worker in enumerate(workers):
                verify[(worker.name, str(task.public_id))] = judgements[position * len(workers) + k].yes
    return _Plan(label, verify)


def _path_of(location: str) -> str:
    return parse.urlsplit(location).path


def _route(location: str) -> tuple[str, dict[str, Any]]:
    try:
        match = resolve(_path_of(location))
    except Resolver404:
        return "", {}
    return match.url_name or "", match.kwargs


class _SimulatedWorker:
    def __init__(
        self, worker: simulation.SimulatedWorker, batch: Batch, browser: Browser, plan: _Plan
    ) -> None:
        self.worker, self.batch, self.browser, self.plan = worker, batch, browser, plan
        self.next_path = reverse("annotate:batch_next", args=[batch.public_id])

    def _fail(self, what: str, page: Page) -> SimulationError:
        text = re.sub(r"<[^>]+>", " ", page.body)
        message = re.search(r'role="alert">(.*?)</', page.body, re.S)
        detail = " ".join((message.group(1) if message else text).split())[:300]
        return SimulationError(f"worker {self.worker.name}: {what} answered HTTP {page.status}: {detail}")

    def start(self) -> None:
        start = reverse("annotate:batch_start", args=[self.batch.public_id])
        if self.batch.provider == Provider.PROLIFIC:
            query = parse.urlencode(
                {
                    prolific.PARAM_WORKER: self.worker.name,
                    prolific.PARAM_STUDY: "simulated",
                    prolific.PARAM_SESSION: f"{self.worker.name}-session",
                }
            )
            page = self.browser.get(f"{start}?{query}")
        else:
            page = self.browser.get(start)
            if page.status != 200:
                raise self._fail("the batch link", page)
            page = self.browser.post(start, {"worker_id": self.worker.name})
            if page.status != 302 or _route(page.location)[0] != "worker_link":
                raise self._fail("starting", page)
            # The start hands out the person's personal link, which logs this browser in.
            page = self.browser.get(_path_of(page.location))
        if page.status != 302:
            raise self._fail("starting", page)

    def step(self) -> str | None:
        """Answer one task; None when done, else why this worker stops (no task left, blocked)."""
        page = self.browser.get(self.next_path)
        if page.status == 403:
            return "blocked"
        if page.status != 302:
            return "no task left" if page.status == 200 else f"next task: HTTP {page.status}"
        name, _kwargs = _route(page.location)
        if name == "task_preview":
            preview = _path_of(page.location)
            shown = self.browser.get(preview)
            if shown.status != 200:
                raise self._fail("the task preview", shown)
            page = self.browser.post(preview, {})
            if page.status != 302:
                raise self._fail("accepting a task", page)
            name, _kwargs = _route(page.location)
        if name != "assignment":
            return "no task left"
        work = _path_of(page.location)
        form = self.browser.get(work)
        if form.status != 200:
            raise self._fail("the task page", form)
        task_id = re.search(r'data-task="([0-9a-f-]{36})"', form.body)
        if task_id is None:
            raise self._fail("the task page (no task id in the form)", form)
        key = (self.worker.name, task_id.group(1))
        if key in self.plan.verify:
            data: dict[str, Any] = {"answer": YES if self.plan.verify[key] else NO}
        else:
            data = self.plan.label[key]
        page = self.browser.post(work, data)
        if page.status != 302:
            raise self._fail("submitting an answer", page)
        return None


def crowd_simulate(
    *,
    batch: Batch,
    workers: int,
    spammers: int,
    accuracy: float,
    limit: int | None = None,
    seed: int = 0,
    client: str | None = None,
    progress: bool = False,
) -> SimulationResult:
    """Have `workers` simulated people (`spammers` of them answering at random, the others right with
    `accuracy`) work on `batch` through the worker pages until no task is left or `limit` answers are in.

    Workers take turns, one task each, in a seeded order, so every worker (spammers too) answers some
    units. With `client` None the pages run in-process (`django.test.Client`, CSRF enforced); with a base
    URL such as http://127.0.0.1:8000 they go over HTTP to a running server on this database (whose per-IP
    throttles then count every simulated person as one). Each person starts on the batch link as a new
    worker named `sim-honest-NN` / `sim-spammer-NN` (the worker's label), so a second call brings new people
    to the slots the first left.
    """
    if batch.provider == Provider.MTURK:
        raise SimulationError(
            "MTurk batches are answered on MTurk; the simulated crowd works on local and Prolific batches."
        )
    if batch.state != Batch.State.PUBLISHED:
        raise SimulationError(
            f"Batch {batch.title!r} is {batch.get_state_display().lower()}; publish it first."
        )
    if limit is not None and limit < 0:
        raise SimulationError(f"limit must be 0 or more, got {limit}")
    try:
        people = simulation.make_crowd(workers=workers, spammers=spammers, accuracy=accuracy)
    except ValueError as exc:
        raise SimulationError(str(exc)) from None
    plan = _plan(batch, people, seed)
    result = SimulationResult(per_worker={person.name: 0 for person in people})
    if limit == 0:
        return result
    make_browser = _browser_factory(client)
    simulated = [
        _SimulatedWorker(person, batch, make_browser(number), plan) for number, person in enumerate(people)
    ]
    rng = random.Random(seed)
    active = list(simulated)
    slots = batch.tasks.count() * batch.assignments_per_task
    total = min(limit, slots) if limit is not None else slots
    with tqdm(total=total, desc="simulated answers", unit="answer", disable=not progress) as bar:
        for worker in active:
            worker.start()
        while active and (limit is None or result.submitted < limit):
            rng.shuffle(active)
            for worker in list(active):
                if limit is not None and result.submitted >= limit:
                    break
                stopped = worker.step()
                if stopped is not None:
                    result.stopped[worker.worker.name] = stopped
                    active.remove(worker)
                    continue
                result.submitted += 1
                result.per_worker[worker.worker.name] += 1
                bar.update()
    return result


def twoafc_crowd_simulate(
    *,
    batch: Batch,
    workers: int,
    limit: int | None = None,
    seed: int = 0,
    noise: Mapping[str, float] | None = None,
) -> SimulationResult:
    """Have `workers` model workers (`agreement.twoafc.model_answer`: the query images' activations compared
    with noise whose size depends on the trial's condition) answer the 2AFC `batch` until no trial is left
    or `limit` answers are in. They go through the services a worker's pages call (accept, serve, submit),
    taking turns one trial each; each answer arrives its model thinking time after the trial was served, so
    the reaction times are the model's."""
    if batch.task_type != Batch.TaskType.TWOAFC:
        raise SimulationError(f"Batch {batch.title!r} is not a 2AFC batch.")
    if batch.provider == Provider.MTURK or batch.state != Batch.State.PUBLISHED:
        raise SimulationError(f"Batch {batch.title!r} must be a published local or Prolific batch.")
    rng = random.Random(seed)
    people = [
        crowd_worker_create(provider=batch.provider, label=f"sim-2afc-{number:02d}")
        for number in range(workers)
    ]
    result = SimulationResult(per_worker={person.label: 0 for person in people})
    active = list(people)
    while active and (limit is None or result.submitted < limit):
        for person in list(active):
            if limit is not None and result.submitted >= limit:
                break
            task = selectors.tasks_open_for_worker(batch=batch, worker=person).first()
            if task is None:
                active.remove(person)
                continue
            assignment = twoafc_trial_serve(assignment=assignment_accept(task=task, worker=person))
            pair = task.twoafc
            answer = twoafc.model_answer(
                strong_activation=pair["strong_activation"],
                weak_activation=pair["weak_activation"],
                strong_side=assignment.trial["strong_side"],
                condition=assignment.trial["condition"],
                rng=rng,
                noise=dict(noise) if noise is not None else None,
            )
            assert assignment.served_at is not None
            twoafc_answer_submit(
                assignment=assignment,
                choice=answer.choice,
                confidence=answer.confidence,
                now=assignment.served_at + timedelta(milliseconds=answer.think_ms),
            )
            result.submitted += 1
            result.per_worker[person.label] += 1
    return result
