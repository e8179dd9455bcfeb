"""The package exports exactly its public names."""

from __future__ import annotations

import workers.coordination as coordination


def test_all_matches_public_names() -> None:
    public = {name for name in vars(coordination) if not name.startswith("_")}
    public -= {"annotations"}
    modules = {name for name in public if type(getattr(coordination, name)).__name__ == "module"}
    assert sorted(coordination.__all__) == sorted(public - modules)
