"""Where a job's `notify_url` may point. The farm POSTs from inside the render network, so a URL naming a loopback,
private, link-local or otherwise non-public address would let any user make the farm call what only the farm can
reach (a cloud's metadata service, an admin port): such URLs are refused unless FARM_WEBHOOK_ALLOW_PRIVATE=1.

A name is resolved twice — when the job is submitted (so the user hears at once) and again at every delivery,
where the connection then goes to the very address that was checked: a name whose DNS answer changes between
the check and the connection (DNS rebinding) cannot slip a private address in.
"""

from __future__ import annotations

import ipaddress
import socket
from urllib.parse import urlsplit

from farm.errors import ValidationError
from farm.jobs.inputs import has_control_characters

MAX_URL_LENGTH = 2000
FIELD = "notify_url"


class Refused(Exception):
    """The URL's host is, or resolves to, an address the farm will not call."""


def _port(url: str) -> int:
    parts = urlsplit(url)
    return parts.port or (443 if parts.scheme == "https" else 80)


def not_public(address: str) -> bool:
    """Loopback, private, link-local, shared (CGNAT), reserved, multicast or unspecified: anything that is not a
    public unicast address (an IPv4-mapped IPv6 address is judged as the IPv4 one it carries)."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return not ip.is_global or ip.is_multicast


def ipaddress_literal(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def resolve(url: str, *, allow_private: bool) -> list[str]:
    """The addresses to connect to for `url`; Refused if the name does not resolve, or (unless `allow_private`)
    if any address it resolves to is not public: one private answer among public ones is refused too."""
    host = urlsplit(url).hostname or ""
    try:
        infos = socket.getaddrinfo(host, _port(url), type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise Refused(f"{host} does not resolve ({exc})") from None
    addresses = list(dict.fromkeys(str(info[4][0]) for info in infos))
    if not allow_private:
        private = [a for a in addresses if not_public(a)]
        if private:
            named = "is" if ipaddress_literal(host) else f"resolves to {private[0]},"
            raise Refused(f"{host} {named} a loopback or private address")
    return addresses


def check_notify_url(raw: str | None, *, allow_private: bool) -> str | None:
    """The form's `notify_url`, checked: an http(s) URL with a host that (unless `allow_private`) resolves only to
    public addresses; None when left out. ValidationError names the field."""
    url = (raw or "").strip()
    if not url:
        return None
    if len(url) > MAX_URL_LENGTH:
        raise ValidationError(FIELD, "too_long", f"notify_url must be at most {MAX_URL_LENGTH} characters")
    if has_control_characters(url) or " " in url:
        raise ValidationError(FIELD, "bad_url", "notify_url must not contain spaces or control characters")
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018  (raises ValueError on a port out of range)
    except ValueError:
        raise ValidationError(FIELD, "bad_url", "notify_url is not a valid URL") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValidationError(FIELD, "bad_url", "notify_url must be an http:// or https:// URL with a host")
    if allow_private:
        return url
    try:
        resolve(url, allow_private=False)
    except Refused as exc:
        raise ValidationError(
            FIELD, "private_address", f"notify_url refused: {exc} (the farm calls only public addresses)"
        ) from None
    return url
