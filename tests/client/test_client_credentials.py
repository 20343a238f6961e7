"""Static credentials: header values, non-secret pacing keys, no refresh, no leaks."""

from __future__ import annotations

import pytest

from pdauth.client.credentials import ApiKeyToken, StaticToken, TokenSource
from pdauth.errors import AuthenticationError

SECRET = "pdus+_0XBPWQQ_b2b2060b-secret"


@pytest.mark.anyio
async def test_static_token_is_a_bearer_token() -> None:
    source = StaticToken(SECRET)
    assert isinstance(source, TokenSource)
    assert await source.authorization() == f"Bearer {SECRET}"


@pytest.mark.anyio
async def test_api_key_uses_the_token_scheme() -> None:
    assert await ApiKeyToken("y_NbAkKc66ryYTWUXYEu").authorization() == (
        "Token token=y_NbAkKc66ryYTWUXYEu"
    )


def test_pacing_keys_are_stable_distinct_and_not_the_secret() -> None:
    a, b = StaticToken(SECRET), StaticToken(SECRET + "x")
    assert a.pacing_key == StaticToken(SECRET).pacing_key
    assert a.pacing_key != b.pacing_key
    assert a.pacing_key != ApiKeyToken(SECRET).pacing_key  # a key and a token never share
    assert SECRET not in a.pacing_key
    assert "b2b2060b" not in a.pacing_key


def test_repr_hides_the_secret() -> None:
    assert SECRET not in repr(StaticToken(SECRET))
    assert SECRET not in repr(ApiKeyToken(SECRET))


@pytest.mark.anyio
@pytest.mark.parametrize("source", [StaticToken(SECRET), ApiKeyToken(SECRET)])
async def test_nothing_to_refresh(source: TokenSource) -> None:
    with pytest.raises(AuthenticationError) as caught:
        await source.refresh(await source.authorization())
    assert caught.value.status == 401
    assert SECRET not in str(caught.value)


@pytest.mark.parametrize("bad", ["", " token", "tok en\n", "x" * 5000])
def test_malformed_credentials_are_refused(bad: str) -> None:
    with pytest.raises(ValueError, match="printable"):
        StaticToken(bad)
    with pytest.raises(ValueError, match="printable"):
        ApiKeyToken(bad)
