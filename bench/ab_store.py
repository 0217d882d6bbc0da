"""The store's read path before and after issue 13's lighter one, in one process, rounds interleaved.

    git show <before>:session/store.py > /tmp/store_before.py
    .venv/bin/python bench/ab_store.py /tmp/store_before.py

``FirestoreStore.read_auth`` (two references, the deadline guard, two validated records) of the
given older ``store.py`` against the current one, with the Firestore client's ``get_all``
replaced by two ready snapshots as in ``bench/micro.py``; also the deadline guard alone.
CPU µs per call, median over rounds.
"""

from __future__ import annotations

import asyncio
import importlib.util
import sys
from pathlib import Path
from typing import Any

sys.path[:0] = [str(Path(__file__).resolve().parent.parent), str(Path(__file__).resolve().parent)]
import micro  # noqa: E402

from session import store as after  # noqa: E402
from session import tokens  # noqa: E402


def load(path: str) -> Any:
    spec = importlib.util.spec_from_file_location("store_before", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["store_before"] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def main(before_path: str, n: int = 3000, rounds: int = 11) -> None:
    fx = micro.Fixture()
    before = load(before_path)
    stores = {}
    for name, module in (("before", before), ("after", after)):

        class Stub(module.FirestoreStore):  # type: ignore[name-defined,misc]
            async def _get_all(self, refs: list[Any], client: Any = None) -> dict[str, Any]:
                return {ref.path: fx.snapshot(ref) for ref in refs}

        stores[name] = Stub(fx.settings)
    parsed = tokens.parse(fx.token)
    assert parsed is not None

    def guard(store: Any) -> Any:
        async def run() -> None:
            async with store._guard():
                pass

        return run

    async def run() -> None:
        fns = {
            f"read_auth, {name}": (lambda s=s: s.read_auth(parsed.username, parsed.token_hash))
            for name, s in stores.items()
        }
        fns.update({f"deadline guard alone, {name}": guard(s) for name, s in stores.items()})
        await micro.us_interleaved(fns, 200, 1)
        result = await micro.us_interleaved(fns, n, rounds)
        for name, us in result.items():
            print(f"{name}: {us:.1f} µs")
        for what in ("read_auth", "deadline guard alone"):
            print(f"{what}: after/before {result[f'{what}, after'] / result[f'{what}, before']:.2f}")

    asyncio.run(run())


if __name__ == "__main__":
    main(sys.argv[1])
