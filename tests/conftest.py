"""Shared fixtures."""

import numpy as np
import pytest


@pytest.fixture
def rng():
    return np.random.default_rng(0)


@pytest.fixture(scope="session")
def demo(tmp_path_factory):
    """A reduced demo run (generated videos, store, trained runs, index, preview), made once per
    test session for the tests that need a trained model."""
    from mvpt.demo import DemoSettings, run_demo

    out = tmp_path_factory.mktemp("demo")
    summary = run_demo(out, DemoSettings.tiny(), progress=False, quiet=True)
    return summary


@pytest.fixture(scope="session")
def linear_run(tmp_path_factory):
    """A linear-kind run with towers set by hand (tests/fixtures/toy_index.py)."""
    from tests.fixtures.toy_index import make_linear_run

    return make_linear_run(tmp_path_factory.mktemp("run"))


@pytest.fixture(scope="session")
def library(tmp_path_factory):
    """Five generated tracks of low/mid/high tone sections (tests/fixtures/toy_index.py)."""
    from tests.fixtures.toy_index import write_library

    return write_library(tmp_path_factory.mktemp("music"))
