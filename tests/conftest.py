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


@pytest.fixture(scope="session")
def tiny_index(tmp_path_factory):
    """A small real music index (8 generated soundtracks of 8 s, offline encoders, a linear run
    fitted on them), built once per test session (see tests/fixtures/tiny_run.py)."""
    from tests.fixtures.tiny_run import build_tiny_index

    return build_tiny_index(tmp_path_factory.mktemp("tiny-run"))
