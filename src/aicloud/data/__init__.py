"""Datasets: file formats, validation, schema and statistics profiling, deterministic splits.

    from aicloud.data import detect_format, profile, split

    fmt = detect_format("digits.csv", head)          # "csv"
    prof = profile(fmt, f)                           # Profile(num_rows, schema, stats)
    n_train, n_test = split(fmt, f, train_out, test_out, train_size=0.8, seed=0, stratify="label")

Every reader streams its input in large blocks and turns whatever a parsing library raises into
:class:`~aicloud.errors.InvalidDataError`; an untrusted file is parsed in a bounded worker process
(:class:`ParserPool`, :mod:`.isolation`) under :class:`ParseLimits`. This package never touches stores
or blobs: callers hand it file objects and sinks.
"""

from aicloud.data.formats import FORMATS, detect_format, normalize_format, release_memory
from aicloud.data.isolation import ParserPool, ParserSession
from aicloud.data.limits import ParseLimits
from aicloud.data.profile import Profile, profile
from aicloud.data.sampling import Writable, assign
from aicloud.data.split import split

__all__ = [
    "FORMATS",
    "ParseLimits",
    "ParserPool",
    "ParserSession",
    "Profile",
    "Writable",
    "assign",
    "detect_format",
    "normalize_format",
    "profile",
    "release_memory",
    "split",
]
