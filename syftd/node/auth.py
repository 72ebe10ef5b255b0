"""Authentication of workers on the local node: PyGrid's ``server_config.authentication`` (docs/protocol.md §3).

Owns the decision for one ``auth_token``: HMAC ``secret`` first, then ``pub_key``, then the optional
3rd-party ``endpoint``, with PyGrid's three error texts. JWTs are checked with PyJWT (an optional
dependency: ``pip install 'pyjwt[crypto]'``), which validates ``exp``/``nbf``/``iat`` when present and
refuses an ``aud`` claim, as PyJWT 1.7 did for PyGrid. Does not own which process a token is for.
"""

from __future__ import annotations

import asyncio
import json
import warnings
from collections.abc import Mapping
from typing import Any

import aiohttp

__all__ = ["INVALID", "REFUSED_BY_ENDPOINT", "REQUIRED", "check_available", "is_enabled", "verify"]

REQUIRED = "Authentication is required, please pass an 'auth_token'."
INVALID = "The 'auth_token' you sent is invalid."
REFUSED_BY_ENDPOINT = "The 'auth_token' you sent did not pass 3rd party validation."
_HMAC = ["HS256", "HS384", "HS512"]
_PUBLIC = ["RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"]
_ENDPOINT_TIMEOUT_S = 10.0


def _settings(server_config: Mapping[str, Any]) -> Mapping[str, Any]:
    auth = server_config.get("authentication")
    return auth if isinstance(auth, Mapping) else {}


def is_enabled(server_config: Mapping[str, Any]) -> bool:
    """Auth is on iff any of ``endpoint``, ``pub_key``, ``secret`` is truthy."""
    auth = _settings(server_config)
    return any(auth.get(key) for key in ("endpoint", "pub_key", "secret"))


def check_available(server_config: Mapping[str, Any]) -> None:
    """Refuse a JWT configuration this node cannot check.

    Raises:
        RuntimeError: ``secret`` or ``pub_key`` is configured and PyJWT is not installed.
    """
    auth = _settings(server_config)
    if auth.get("secret") or auth.get("pub_key"):
        try:
            import jwt  # noqa: F401
        except ImportError:
            raise RuntimeError(
                "server_config.authentication needs PyJWT to check tokens: pip install 'pyjwt[crypto]'"
            ) from None


async def verify(token: object, server_config: Mapping[str, Any]) -> str | None:
    """None when ``token`` passes the process's authentication, else PyGrid's error text."""
    auth = _settings(server_config)
    if not is_enabled(server_config):
        return None
    if not token or not isinstance(token, str):
        return REQUIRED
    if auth.get("secret") or auth.get("pub_key"):
        if not any(
            _jwt_ok(token, auth.get(key), algorithms) for key, algorithms in (("secret", _HMAC), ("pub_key", _PUBLIC))
        ):
            return INVALID
    endpoint = auth.get("endpoint")
    if endpoint and not await _endpoint_ok(str(endpoint), token):
        return REFUSED_BY_ENDPOINT
    return None


def _jwt_ok(token: str, key: object, algorithms: list[str]) -> bool:
    if not key or not isinstance(key, str):
        return False
    import jwt

    with warnings.catch_warnings():
        # PyGrid (PyJWT 1.7) accepted short HMAC secrets; a node imitating it must too.
        warnings.filterwarnings("ignore", category=jwt.warnings.InsecureKeyLengthWarning)
        try:
            jwt.decode(token, key, algorithms=algorithms)
        except (jwt.PyJWTError, ValueError, TypeError):
            return False
    return True


async def _endpoint_ok(url: str, token: str) -> bool:
    timeout = aiohttp.ClientTimeout(total=_ENDPOINT_TIMEOUT_S)
    try:
        async with (
            aiohttp.ClientSession(timeout=timeout) as session,
            session.post(url, data=json.dumps({"auth_token": token}).encode()) as response,
        ):
            return response.status == 200
    except (aiohttp.ClientError, asyncio.TimeoutError):
        return False
