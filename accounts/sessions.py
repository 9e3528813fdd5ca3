"""Sessions in the database, read through the cache, that keep working while the cache is down.

Django's ``cached_db`` store already survives a failed cache read and a failed write on save,
but not a failed write after reading the session from the database, nor a failed membership
test: with Redis unreachable every signed-in page would fail. Deleting (sign-out) still fails
loudly, as in Django: a session copy left in a cache that comes back must not outlive it.
"""

import logging

from django.contrib.sessions.backends import cached_db

logger = logging.getLogger("django.contrib.sessions")


class SessionStore(cached_db.SessionStore):
    def load(self):
        try:
            data = self._cache.get(self.cache_key)
        except Exception:
            logger.exception("Error reading the session from cache (%s)", self._cache)
            data = None
        if data is not None:
            return data
        stored = self._get_session_from_db()
        if stored is None:
            return {}
        data = self.decode(stored.session_data)
        try:
            self._cache.set(self.cache_key, data, self.get_expiry_age(expiry=stored.expire_date))
        except Exception:
            logger.exception("Error saving to cache (%s)", self._cache)
        return data

    def exists(self, session_key):
        if not session_key:
            return False
        try:
            if (self.cache_key_prefix + session_key) in self._cache:
                return True
        except Exception:
            logger.exception("Error reading the session from cache (%s)", self._cache)
        return super(cached_db.SessionStore, self).exists(session_key)
