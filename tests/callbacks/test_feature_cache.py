"""callbacks.feature_cache: when the callback is added, and that it hands nothing to a data module that does not ask
for the cache. The cache it builds (equal to the live trunks, a fit on it) is tested in
tests/datamodules/test_feature_cache.py."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from callbacks.feature_cache import FeatureCacheCallback, feature_cache_callbacks


class _Unattached:
    """A module used on its own: Lightning's ``trainer`` property raises outside a Trainer."""

    @property
    def trainer(self) -> Any:
        raise RuntimeError("is not attached to a `Trainer`")


def _module(datamodule: Any, attached: bool = True) -> Any:
    return SimpleNamespace(trainer=SimpleNamespace(datamodule=datamodule)) if attached else _Unattached()


def test_added_only_when_the_data_module_asks_for_the_cache() -> None:
    callbacks = feature_cache_callbacks(_module(SimpleNamespace(feature_cache=True)))
    assert len(callbacks) == 1 and isinstance(callbacks[0], FeatureCacheCallback)
    assert feature_cache_callbacks(_module(SimpleNamespace(feature_cache=False))) == []
    assert feature_cache_callbacks(_module(SimpleNamespace())) == []  # a data module without the switch
    assert feature_cache_callbacks(_module(None)) == []
    assert feature_cache_callbacks(_module(SimpleNamespace(feature_cache=True), attached=False)) == []


class _Refusing:
    """A module whose backbone must not be touched: reading it fails the test."""

    @property
    def backbone(self) -> None:
        raise AssertionError("the callback built a cache nobody asked for")


def test_setup_leaves_a_data_module_without_the_cache_alone() -> None:
    served: list[Any] = []
    no_cache = SimpleNamespace(feature_cache=False, use_feature_cache=lambda cache, info: served.append(cache))
    for dm in (None, no_cache, SimpleNamespace(feature_cache=True)):  # the last cannot take a cache
        FeatureCacheCallback().setup(SimpleNamespace(datamodule=dm), _Refusing(), "fit")  # type: ignore[arg-type]
    assert served == []
