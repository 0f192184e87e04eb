"""Amazon Mechanical Turk: the client that mirrors batches as HITs (`client`) and the ExternalQuestion pages
MTurk frames (`views`, `urls`, `templates/mturk`)."""

from annotate.providers.mturk.client import MTurkProvider

__all__ = ["MTurkProvider"]
