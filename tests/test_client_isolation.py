"""The SDK installs and imports without torch, Ray, transformers, SQLAlchemy or our server code."""

from __future__ import annotations

import subprocess
import sys
import textwrap

FORBIDDEN = ("torch", "ray", "transformers", "peft", "sqlalchemy", "alembic", "fastapi", "api", "workers", "optuna")


def test_client_imports_with_heavy_packages_missing() -> None:
    program = textwrap.dedent(
        f"""
        import sys
        class Block:
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in {FORBIDDEN!r}:
                    raise ImportError("blocked for this test: " + name)
                return None
        sys.meta_path.insert(0, Block())
        from searchsvc.client import Client, Study, InvalidSpec, NotFound, load_spec
        spec = load_spec("name: x\\nmodel: m\\ntasks:\\n  - {{name: a, path: rel/a}}\\n")
        assert spec["tasks"][0]["path"].endswith("/rel/a") and spec["tasks"][0]["path"].startswith("/")
        Client("http://127.0.0.1:1", "token").close()
        loaded = sorted({{m.split(".")[0] for m in sys.modules}} & set({FORBIDDEN!r}))
        assert not loaded, loaded
        print("ok")
        """
    )
    result = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"
