"""CachingAuthenticator: a verified bearer token is reused until it expires."""

from __future__ import annotations

import pytest

from services.common.auth import USER_CONTEXT_HEADER, CallInfo, Principal
from services.common.auth_cache import CachingAuthenticator
from services.common.errors import Unauthenticated


class Counting:
    def __init__(self, exp: float | None = 1000.0) -> None:
        self.calls = 0
        self.exp = exp

    def authenticate(self, call: CallInfo) -> Principal:
        self.calls += 1
        if "bad" in call.metadata.get("authorization", ""):
            raise Unauthenticated("bad token", reason="INVALID_TOKEN")
        claims = {} if self.exp is None else {"exp": self.exp}
        return Principal(subject="s", client_id="c", claims=claims)


def call(token: str, method: str = "/s/M", **extra: str) -> CallInfo:
    return CallInfo(method, {"authorization": f"Bearer {token}", **extra})


def test_same_token_and_method_is_verified_once() -> None:
    inner = Counting()
    cache = CachingAuthenticator(inner, clock=lambda: 100.0)
    first = cache.authenticate(call("t1"))
    assert cache.authenticate(call("t1")) is first
    assert inner.calls == 1
    cache.authenticate(call("t1", "/s/Other"))  # internal methods accept other audiences
    cache.authenticate(call("t2"))
    assert inner.calls == 3


def test_expired_tokens_and_tokens_without_exp_are_checked_again() -> None:
    now = [100.0]
    inner = Counting(exp=150.0)
    cache = CachingAuthenticator(inner, clock=lambda: now[0])
    cache.authenticate(call("t"))
    now[0] = 151.0
    cache.authenticate(call("t"))
    assert inner.calls == 2
    no_exp = Counting(exp=None)
    cache = CachingAuthenticator(no_exp, clock=lambda: 100.0)
    cache.authenticate(call("t"))
    cache.authenticate(call("t"))
    assert no_exp.calls == 2


def test_dpop_and_failures_are_never_cached() -> None:
    inner = Counting()
    cache = CachingAuthenticator(inner, clock=lambda: 100.0)
    for _ in range(2):
        cache.authenticate(CallInfo("/s/M", {"authorization": "DPoP t", "dpop": "proof"}))
        cache.authenticate(call("t", dpop="proof"))
        with pytest.raises(Unauthenticated):
            cache.authenticate(call("bad"))
    assert inner.calls == 6


def test_bounded() -> None:
    inner = Counting()
    cache = CachingAuthenticator(inner, max_entries=2, clock=lambda: 100.0)
    for token in ("a", "b", "c", "a"):
        cache.authenticate(call(token))
    assert inner.calls == 4  # "a" was evicted by "c"


class CountingDpop(Counting):
    """Like JwtAuthenticator: checks the proof itself on a miss, exposes its checker."""

    def __init__(self, internal: frozenset[str] = frozenset()) -> None:
        super().__init__()
        self.proofs: list[str] = []
        self.internal = internal

    def proof_checker(self, call: CallInfo, token: str, jkt: str, claims: object) -> None:
        proof = call.metadata.get("dpop", "")
        if proof in self.proofs or not proof:
            raise Unauthenticated("replayed", reason="INVALID_DPOP_PROOF")
        self.proofs.append(proof)

    def is_internal(self, method: str) -> bool:
        return method in self.internal

    def authenticate(self, call: CallInfo) -> Principal:
        self.calls += 1
        forwarded = USER_CONTEXT_HEADER in call.metadata
        if forwarded and not self.is_internal(call.method):
            raise Unauthenticated("context on a public method", reason="USER_CONTEXT_NOT_ACCEPTED")
        if not forwarded:
            self.proof_checker(call, "t", "jkt", {})
        return Principal(
            subject="s",
            client_id="c",
            claims={"exp": self.exp},
            token_jkt="jkt",
            forwarded=forwarded,
        )


def dpop_call(proof: str, method: str = "/s/M") -> CallInfo:
    return CallInfo(method, {"authorization": "DPoP t", "dpop": proof})


def test_dpop_token_verified_once_but_every_proof_checked() -> None:
    inner = CountingDpop(internal=frozenset({"/s/Internal"}))
    cache = CachingAuthenticator(inner, clock=lambda: 100.0, dpop=True)
    first = cache.authenticate(dpop_call("p1"))
    assert cache.authenticate(dpop_call("p2")) is first
    assert inner.calls == 1 and inner.proofs == ["p1", "p2"]
    for replayed in ("p1", "p2", ""):  # the same replay memory on hits and misses
        with pytest.raises(Unauthenticated):
            cache.authenticate(dpop_call(replayed))
    # Internal methods too: a DPoP-bound token in `authorization` always needs its proof.
    for _ in range(2):
        with pytest.raises(Unauthenticated):
            cache.authenticate(dpop_call("", "/s/Internal"))


def test_forwarded_user_context_is_cached_apart_and_internal_only() -> None:
    inner = CountingDpop(internal=frozenset({"/s/Internal"}))
    cache = CachingAuthenticator(inner, clock=lambda: 100.0, dpop=True)
    context = CallInfo("/s/Internal", {USER_CONTEXT_HEADER: "t"})
    first = cache.authenticate(context)
    assert first.forwarded and cache.authenticate(context) is first and inner.calls == 1
    with pytest.raises(Unauthenticated):
        cache.authenticate(CallInfo("/s/M", {USER_CONTEXT_HEADER: "t"}))
    # The same token presented by its holder is not the cached forwarded principal.
    with pytest.raises(Unauthenticated):
        cache.authenticate(dpop_call("", "/s/Internal"))
