"""The test suite's cache: Redis, with ``clear()`` scoped to this test run's key prefix.

Several test runs (checkouts, helpers; told apart by TEST_DB_NAME) may share one Redis
database. Django's ``RedisCache.clear()`` is FLUSHDB, which would wipe the other runs' rate-limit
counters and cached rows in the middle of their tests; this deletes only keys under our prefix.
"""

from django.core.cache.backends.redis import RedisCache


class RunScopedRedisCache(RedisCache):
    def clear(self) -> None:
        client = self._cache.get_client(write=True)
        batch = []
        for key in client.scan_iter(match=f"{self.key_prefix}:*", count=500):
            batch.append(key)
            if len(batch) >= 500:
                client.delete(*batch)
                batch = []
        if batch:
            client.delete(*batch)
