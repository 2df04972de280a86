"""A proxy factory for the compiled-search test: the real proxy, logging after every run its
process id and how many surrogate graphs the run compiled (``last_run["compiles"]``).

Importable by spawned workers as ``probe_proxy:build`` (``tests/`` is on ``sys.path``)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from autoloss.losses.compiled import compile_totals
from autoloss.train.proxy import Proxy, build_proxy


class ProbeProxy(Proxy):
    def run(self, loss: Any, **kwargs: Any) -> dict[str, float]:
        before = compile_totals()[0]
        try:
            return super().run(loss, **kwargs)
        finally:  # a pruned run raises: count its compilations too
            self.cache_dir.mkdir(parents=True, exist_ok=True)
            with open(self.cache_dir / "compiles.log", "a") as f:
                f.write(f"{os.getpid()} {compile_totals()[0] - before} "
                        f"{self.last_run.get('compiles')}\n")


def build(config: dict[str, Any], *, cache_dir: Path) -> ProbeProxy:
    proxy = build_proxy(config, cache_dir=cache_dir)
    proxy.__class__ = ProbeProxy
    return proxy
