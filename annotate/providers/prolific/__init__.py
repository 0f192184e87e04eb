"""Prolific: the client that mirrors batches as studies through Prolific's API (`client`, over `api`), and the
webhook Prolific calls when a submission or study changes (`views`, `urls`)."""

from annotate.providers.prolific.client import PARAM_SESSION, PARAM_STUDY, PARAM_WORKER, ProlificProvider

__all__ = ["PARAM_SESSION", "PARAM_STUDY", "PARAM_WORKER", "ProlificProvider"]
