import pytest

from install_helpers import build_wheel


@pytest.fixture(scope="session")
def built_wheel(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("wheel")
    return build_wheel(tmp / "dist", tmp)
