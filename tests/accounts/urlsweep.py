"""Every URL the project serves, with dummy values in its parameters (for forced-browsing tests).

Walks ``get_resolver().url_patterns`` recursively. Path converters get int → 1, uuid → a random
uuid (or the one given, e.g. a real invoice's public id, so a leaking view would find data),
str/slug/path → "x"; regex groups get the first of a few candidates they accept (or the first
alternative of an ``a|b`` group, e.g. the admin's app labels).
"""

import re
import uuid
from dataclasses import dataclass

from django.urls import Resolver404, URLPattern, URLResolver, get_resolver, resolve
from django.urls.converters import IntConverter, UUIDConverter

ROUTE_PARAMETER = re.compile(r"<(?:(?P<converter>[^>:]+):)?(?P<name>[^>]+)>")


@dataclass(frozen=True)
class SweepURL:
    path: str
    name: str | None


def _candidates() -> list[str]:
    return ["x", "1", str(uuid.uuid4()), "x-1", "x.x"]


def _route_value(converter, uuid_value: str | None) -> str:
    if isinstance(converter, IntConverter):
        return "1"
    if isinstance(converter, UUIDConverter):
        return uuid_value or str(uuid.uuid4())
    for candidate in _candidates():
        if re.fullmatch(converter.regex, candidate):
            return candidate
    raise ValueError(f"no dummy value for converter {converter!r}")


def _route_to_path(route: str, converters: dict, uuid_value: str | None) -> str:
    return ROUTE_PARAMETER.sub(lambda m: _route_value(converters[m["name"]], uuid_value), route)


def _group_end(regex: str, start: int) -> int:
    """Index just past the group that opens at ``start`` (Django's URL regexes are simple)."""
    depth, index = 0, start
    while index < len(regex):
        char = regex[index]
        if char == "\\":
            index += 2
            continue
        if char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
            if depth == 0:
                return index + 1
        index += 1
    raise ValueError(f"unbalanced regex {regex!r}")


def _regex_value(group_regex: str) -> str:
    for candidate in _candidates():
        if re.fullmatch(group_regex, candidate):
            return candidate
    first = group_regex.split("|")[0]
    if re.fullmatch(group_regex, first):
        return first
    raise ValueError(f"no dummy value for {group_regex!r}")


def _regex_to_path(regex: str) -> str:
    regex = regex.removeprefix("^").removesuffix("$").removesuffix(r"\Z")
    out, index = [], 0
    while index < len(regex):
        if regex.startswith("(?P<", index):
            end = _group_end(regex, index)
            body = regex[regex.index(">", index) + 1 : end - 1]
            out.append(_regex_value(body))
            index = end
        elif regex[index] == "\\":
            out.append(regex[index + 1])
            index += 2
        else:
            out.append(regex[index])
            index += 1
    return "".join(out)


def _pattern_to_path(pattern, uuid_value: str | None) -> str:
    if hasattr(pattern, "_route"):
        return _route_to_path(str(pattern._route), pattern.converters, uuid_value)
    return _regex_to_path(pattern.regex.pattern)


def _walk(patterns, prefix: str, namespace: str | None, uuid_value: str | None):
    for entry in patterns:
        part = _pattern_to_path(entry.pattern, uuid_value)
        if isinstance(entry, URLResolver):
            inner = entry.namespace or None
            full_ns = ":".join(n for n in (namespace, inner) if n) or None
            yield from _walk(entry.url_patterns, prefix + part, full_ns, uuid_value)
        elif isinstance(entry, URLPattern):
            name = f"{namespace}:{entry.name}" if namespace and entry.name else entry.name
            yield SweepURL(path="/" + prefix + part, name=name)


def all_urls(*, uuid_value: str | None = None) -> list[SweepURL]:
    """Each distinct, resolvable URL once, in resolver order."""
    seen, urls = set(), []
    for url in _walk(get_resolver().url_patterns, "", None, uuid_value):
        if url.path in seen:
            continue
        try:
            resolve(url.path)
        except Resolver404:
            raise AssertionError(f"dummy URL {url.path} ({url.name}) does not resolve") from None
        seen.add(url.path)
        urls.append(url)
    return urls
