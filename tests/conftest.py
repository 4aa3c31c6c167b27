"""Every test starts from the same random state, with a dataset cache and a run store of
its own session, so a test gives the same answer alone, in any order and on any machine."""
from __future__ import annotations

import random
from collections.abc import Iterator

import numpy as np
import pytest
import torch


def _seed_everything() -> None:
    random.seed(0)
    np.random.seed(0)
    torch.manual_seed(0)


@pytest.fixture(scope="session", autouse=True)
def _session_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Generated and preprocessed datasets and trained models go to folders of this session
    (notebook kernels inherit them), never to the user's ``~/.cache/fernb`` or the project's
    ``results/store``, where another version's files would be read back."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("FERNB_CACHE", str(tmp_path_factory.mktemp("fernb-cache")))
        patch.setenv("FERNB_STORE", str(tmp_path_factory.mktemp("fernb-store")))
        yield


@pytest.fixture(scope="module", autouse=True)
def _seeded_module() -> None:
    """Module fixtures (a study trained once for several tests) start from one state."""
    _seed_everything()


@pytest.fixture(autouse=True)
def _seeded_test() -> None:
    """Whatever earlier tests drew from the global generators, each test starts alike."""
    _seed_everything()
