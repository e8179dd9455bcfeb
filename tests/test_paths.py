"""The path rules on their own: per-user roots never let a user name step out of them."""

from __future__ import annotations

import os
from pathlib import Path

from searchsvc.paths import PathPolicy, looks_like_path, parse_roots, roots_for


def test_user_roots_take_only_plain_names(tmp_path: Path) -> None:
    roots = parse_roots(os.pathsep.join([str(tmp_path / "users" / "{user}"), " ", str(tmp_path / "shared")]))
    assert roots == [tmp_path / "users" / "{user}", tmp_path / "shared"]
    assert roots_for(roots, "alice") == [tmp_path / "users" / "alice", tmp_path / "shared"]
    for name in ("..", "../bob", "a/b", "a..b", " alice", ""):
        assert roots_for(roots, name) == [tmp_path / "shared"], name


def test_paths_and_hub_ids_are_told_apart() -> None:
    assert all(looks_like_path(v) for v in ("/srv/m", "~/m", "./m", "../m", "C:\\m"))
    assert not any(looks_like_path(v) for v in ("bert-base-uncased", "google/bert_uncased_L-2_H-128_A-2"))


def test_a_root_that_is_itself_a_symlink_is_followed_once(tmp_path: Path) -> None:
    real = tmp_path / "real"
    (real / "task").mkdir(parents=True)
    (tmp_path / "link").symlink_to(real, target_is_directory=True)
    policy = PathPolicy(roots=[tmp_path / "link"])
    assert policy.task_folder(str(tmp_path / "link" / "task")) == real / "task"
    assert policy.task_folder(str(real / "task")) == real / "task"  # the same folder, by its real name
