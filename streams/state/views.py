"""Which view class serves each kind of store (:attr:`StoreSpec.kind`), in one place.

=================================  ==========================================================
kind                               view
=================================  ==========================================================
``aggregate``, ``table``, ``store``  :class:`~streams.state.store_view.TableView` (key -> value)
``window``                         :class:`~streams.state.window_store.WindowStoreView`
``session``                        :class:`~streams.state.window_store.SessionStoreView`
``join-buffer``                    :class:`~streams.state.window_store.JoinBufferView`
``versioned``                      :class:`~streams.state.versioned_store.VersionedTableView`
``grace-buffer``                   :class:`~streams.state.versioned_store.GraceBufferView`
=================================  ==========================================================

All of them are :class:`~streams.state.store_view.StoreView`\\ s: the task flushes, discards and
savepoints them alike. Key encodings are in :mod:`streams.state.window_store`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .store import TaskStore
from .store_view import StoreView, TableView
from .versioned_store import GraceBufferView, VersionedTableView
from .window_store import JoinBufferView, SessionStoreView, WindowStoreView

if TYPE_CHECKING:
    from ..dsl.builder import StoreSpec

VIEWS: dict[str, type[StoreView]] = {
    "aggregate": TableView,
    "table": TableView,
    "store": TableView,
    "window": WindowStoreView,
    "session": SessionStoreView,
    "join-buffer": JoinBufferView,
    "versioned": VersionedTableView,
    "grace-buffer": GraceBufferView,
}


def open_view(store: TaskStore, spec: StoreSpec) -> StoreView:
    """The view of ``spec``'s table in ``store``, of the class its kind calls for."""
    try:
        cls = VIEWS[spec.kind]
    except KeyError:
        raise ValueError(f"store {spec.name!r} has unknown kind {spec.kind!r}; "
                         f"known: {', '.join(sorted(VIEWS))}") from None
    if cls is VersionedTableView:
        return VersionedTableView(store, spec.name, spec.key_serde, spec.value_serde,
                                  history_ms=spec.history_ms or 0)
    return cls(store, spec.name, spec.key_serde, spec.value_serde)
