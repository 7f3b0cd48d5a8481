import pytest

from install_helpers import build_wheel, copy_source_tree


@pytest.fixture(scope="session")
def built_wheel(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("wheel")
    return build_wheel(tmp / "dist", copy_source_tree(tmp / "src"))
