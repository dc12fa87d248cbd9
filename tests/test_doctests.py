"""The runnable examples in the docstrings stay true."""

import doctest
import importlib

import pytest

MODULES = ["loop.store", "loop.evaluation", "loop.strategies", "loop.embeddings", "loop.autoaccept",
           "loop.forecast", "loop.agreement", "loop.people", "models.images", "models.heads", "models.backbones"]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    result = doctest.testmod(importlib.import_module(name))
    assert result.failed == 0 and result.attempted > 0
