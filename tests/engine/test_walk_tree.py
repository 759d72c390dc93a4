"""fsutil.walk_tree, which du (a dir-layout VE's usage) and the shared-template
reinstall walk VE trees with: no link followed, no depth limit, hard links once."""

import os

import pytest

from ve.fsutil import remove_tree, walk_tree
from ve.storage.du import directory_usage


@pytest.fixture
def tree(tmp_path):
    """A directory removed again by ``rm`` after the test: pytest's own clean-up of old
    temporary directories (shutil.rmtree) recurses, and a tree this deep stops it."""
    path = tmp_path / "tree"
    yield path
    remove_tree(path)


def test_a_deep_tree_with_links_is_walked_once_and_never_out(tmp_path, tree):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret").write_bytes(b"s" * 8192)
    deep = tree
    tree.mkdir()
    for _ in range(1500):  # deeper than Python's recursion limit (os.makedirs recurses)
        deep = deep / "d"
        deep.mkdir()
    (deep / "f").write_bytes(b"x" * 4096)
    os.link(deep / "f", tree / "again")  # one file, two names
    os.symlink(outside, tree / "out")  # a link out of the tree
    names = [name for _, name, _ in walk_tree(tree)]
    assert names.count("d") == 1500 and "f" in names and "out" in names
    assert "secret" not in names
    used, inodes = directory_usage(tree)
    assert inodes == 1500 + 1 + 1  # the directories, the file once, the link
    counted = [deep / "f", tree / "out"]
    level = tree
    for _ in range(1500):
        level = level / "d"
        counted.append(level)
    assert used == sum(os.lstat(path).st_blocks * 512 for path in counted)
