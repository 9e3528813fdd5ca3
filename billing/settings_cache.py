"""Settings every page reads (the organization, portal preferences, web tabs), from the shared
cache, once per request.

Outside a request (jobs, shell) each read asks the cache. Inside one, the first read fetches
every key registered with ``read_together`` in one round trip, and later reads of the same
request are answered from memory: a portal page used to ask Redis for the organization three
times, then for the preferences and the tabs. A write (``forget``) drops the key from the
cache and from the request's memory, so the request that changed a setting sees the change.
"""

import logging
from collections.abc import Callable
from contextvars import ContextVar
from typing import Any

from django.core.cache import cache

logger = logging.getLogger(__name__)

_request_memory: ContextVar[dict[str, Any] | None] = ContextVar("settings_cache", default=None)
_read_together: list[str] = []


def read_together(key: str) -> str:
    """Register ``key`` as one that (almost) every request reads."""
    if key not in _read_together:
        _read_together.append(key)
    return key


def get_or_load(key: str, load: Callable[[], Any], timeout: int) -> Any:
    """The cached value of ``key``, else ``load()``'s (which is then cached for ``timeout`` s).
    An unreachable cache is logged and read around: the value is loaded each time."""
    memory = _request_memory.get()
    try:
        if memory is None:
            value = cache.get(key)
        else:
            if key not in memory:
                keys = [k for k in _read_together if k not in memory]
                if key not in keys:
                    keys.append(key)
                found = cache.get_many(keys)
                memory.update({k: found.get(k) for k in keys})
            value = memory[key]
    except Exception:
        logger.exception("settings cache unreachable")
        value = None
    if value is None:
        value = load()
        try:
            cache.set(key, value, timeout)
        except Exception:
            logger.exception("settings cache unreachable")
        if memory is not None:
            memory[key] = value
    return value


def forget(key: str) -> None:
    """Drop ``key`` after a write, here and in the shared cache."""
    try:
        cache.delete(key)
    except Exception:  # the entry expires on its own
        logger.exception("settings cache unreachable")
    memory = _request_memory.get()
    if memory is not None:
        memory.pop(key, None)


def drop_local(keys) -> None:
    """Forget ``keys`` in this request's memory only (the shared cache was just written)."""
    memory = _request_memory.get()
    if memory is not None:
        for key in keys:
            memory.pop(key, None)


class SettingsCacheMiddleware:
    """Give each request its own memory of the settings it read."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        token = _request_memory.set({})
        try:
            return self.get_response(request)
        finally:
            _request_memory.reset(token)
