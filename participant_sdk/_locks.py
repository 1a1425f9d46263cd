"""Per-key asyncio locks that do not outlive their users."""

from __future__ import annotations

import asyncio
from collections.abc import Hashable

__all__ = ["KeyedLocks"]


class _Entry:
    __slots__ = ("lock", "users")

    def __init__(self) -> None:
        self.lock = asyncio.Lock()
        self.users = 0


class KeyedLocks:
    """One lock per key, created on demand and dropped when nobody holds or awaits it,
    so millions of finished branches leave no locks behind."""

    def __init__(self) -> None:
        self._entries: dict[Hashable, _Entry] = {}

    def hold(self, key: Hashable) -> _Held:
        """``async with locks.hold(key):`` — the lock of ``key`` for the block."""
        return _Held(self._entries, key)

    def __len__(self) -> int:
        return len(self._entries)


class _Held:
    """The context manager of :meth:`KeyedLocks.hold`; a plain class, as it runs for
    every protocol call (a generator-based one costs several times as much)."""

    __slots__ = ("_entries", "_entry", "_key")

    def __init__(self, entries: dict[Hashable, _Entry], key: Hashable) -> None:
        self._entries = entries
        self._key = key

    async def __aenter__(self) -> None:
        entry = self._entries.get(self._key)
        if entry is None:
            entry = self._entries[self._key] = _Entry()
        entry.users += 1
        self._entry = entry
        try:
            await entry.lock.acquire()
        except BaseException:  # cancelled while waiting
            self._release_entry()
            raise

    async def __aexit__(self, *exc_info: object) -> None:
        self._entry.lock.release()
        self._release_entry()

    def _release_entry(self) -> None:
        entry = self._entry
        entry.users -= 1
        if entry.users == 0:
            del self._entries[self._key]
