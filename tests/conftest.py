from pathlib import Path

import pytest
from hypothesis import settings

SHARED = Path(__file__).resolve().parents[1].parent / "shared"

# Examples are cheap for the engine but the readable reference is slow Python: keep CI bounded.
settings.register_profile("default", deadline=None, max_examples=40, print_blob=True)
settings.register_profile("thorough", deadline=None, max_examples=400, print_blob=True)
settings.load_profile("default")


def shared_path(*parts) -> Path:
    """A path in ../shared, or skip the test (with the reason) when it is not there."""
    p = SHARED.joinpath(*parts)
    if not p.exists():
        pytest.skip(f"{p} not found: ../shared (test data) is not beside this checkout")
    return p
