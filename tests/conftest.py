import os
import sys

import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(__file__))

try:
    from hypothesis import HealthCheck, settings
except ImportError:  # test_properties.py skips itself; the rest runs without it
    settings = None
if settings is not None:
    # "ci" (the default) draws the same examples on every run, so a red CI is
    # always reproducible; "explore" draws new ones each run and keeps failures
    # in .hypothesis/ -- HYPOTHESIS_PROFILE=explore python -m pytest. Each test
    # states its own max_examples, whatever the profile.
    _common = dict(deadline=None, print_blob=True, suppress_health_check=[HealthCheck.too_slow])
    settings.register_profile("ci", derandomize=True, database=None, **_common)
    settings.register_profile("explore", derandomize=False, **_common)
    settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


@pytest.fixture
def rng():
    return np.random.default_rng(12345)
