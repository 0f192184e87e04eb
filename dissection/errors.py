"""Errors a user can act on: each message names the file, row, field or layer at fault."""


class DissectionError(Exception):
    """Base class; the CLI prints these without a traceback."""


class ProbeSetError(DissectionError):
    """A Broden-format probe set is missing a file or holds a bad row, image or label layer."""


class ModelError(DissectionError):
    """A model cannot be built or its weights do not fit the architecture."""


class LayerError(DissectionError):
    """A layer name is unknown or its output is not N x C x H x W."""
