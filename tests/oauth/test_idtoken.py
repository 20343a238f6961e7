"""id_token claims and app-token scopes -> account, user and region."""

from __future__ import annotations

from collections.abc import Mapping

import pytest
from hypothesis import given, settings, strategies as st

from pdauth.errors import IdTokenError, TokenResponseError
from pdauth.oauth import (
    AccountIdentity,
    AppAccount,
    identity_from_app_scope,
    identity_from_claims,
)

NOW = 1_800_000_000.0
CLIENT_ID = "0f7d3a9e-client"
ISSUER = "https://app.pagerduty.com/global/oauth/anonymous"
US = "https://api.pagerduty.com"
EU = "https://api.eu.pagerduty.com"
BASES = {"us": US, "eu": EU}

# Shaped like PagerDuty's production sample (07-PagerDuty-OpenId-Token.md).
CLAIMS: dict[str, object] = {
    "exp": NOW + 3600,
    "nbf": NOW,
    "jti": "PJTI123",
    "iss": ISSUER,
    "aud": [US, CLIENT_ID],
    "sub": "PIYKDBN",
    "auth_time": NOW,
    "iat": NOW,
    "purpose": "id",
    "at_hash": "abc",
    "acr": "acr:html-form:unitedstates",
    "amr": ["pwd"],
    "delegation_id": "PDELEG1",
    "account_id": "PACCT01",
    "user_id": "PIYKDBN",
    "azp": CLIENT_ID,
    "subdomain": "acme-corp",
    "region": "UnitedStates",
    "sid": "sid-1",
    "product_abilities": [],
}

_DROP = object()


def claims(**changes: object) -> dict[str, object]:
    result = dict(CLAIMS)
    for key, value in changes.items():
        if value is _DROP:
            result.pop(key, None)
        else:
            result[key] = value
    return result


def identify(data: Mapping[str, object], **kwargs: object) -> AccountIdentity:
    args: dict[str, object] = {
        "client_id": CLIENT_ID,
        "issuer": ISSUER,
        "api_base_urls": BASES,
        "now": NOW,
    }
    args.update(kwargs)
    return identity_from_claims(data, **args)  # type: ignore[arg-type]


def refused(data: object, claim: str, **kwargs: object) -> IdTokenError:
    with pytest.raises(IdTokenError) as info:
        identify(data, **kwargs)  # type: ignore[arg-type]
    assert info.value.error == "invalid_id_token"
    assert claim in str(info.value)
    return info.value


def test_us_identity() -> None:
    assert identify(CLAIMS) == AccountIdentity(
        account_id="PACCT01",
        subdomain="acme-corp",
        user_id="PIYKDBN",
        region="us",
        api_base_url=US,
        delegation_id="PDELEG1",
        subject="PIYKDBN",
    )


def test_eu_identity_and_trailing_slashes() -> None:
    identity = identify(claims(aud=[CLIENT_ID, EU + "/"]))
    assert (identity.region, identity.api_base_url) == ("eu", EU)
    identity = identify(claims(aud=[CLIENT_ID, EU]), api_base_urls={"us": US, "eu": EU + "/"})
    assert (identity.region, identity.api_base_url) == ("eu", EU)


def test_optional_claims_may_be_absent() -> None:
    identity = identify(claims(azp=_DROP, nbf=_DROP, delegation_id=_DROP))
    assert identity.delegation_id is None


def test_an_email_subject_is_accepted() -> None:
    assert identify(claims(sub="someone@example.com")).subject == "someone@example.com"


def test_unknown_extra_audiences_are_ignored() -> None:
    assert identify(claims(aud=[US, CLIENT_ID, "https://other.example"])).region == "us"


@pytest.mark.parametrize(
    "iss",
    [
        ISSUER + "/",
        "https://identity.pagerduty.com/global/oauth/anonymous",
        "",
        None,
        _DROP,
        [ISSUER],
    ],
)
def test_iss_must_match_exactly(iss: object) -> None:
    refused(claims(iss=iss), "iss")


@pytest.mark.parametrize(
    ("aud", "claim"),
    [
        (_DROP, "aud"),
        (None, "aud"),
        ([], "aud"),
        ({"a": 1}, "aud"),
        ([US, CLIENT_ID, 7], "aud"),
        (CLIENT_ID, "aud"),  # no regional API
        ([US], "client id"),
        ([US, CLIENT_ID + "x"], "client id"),
        ([US, EU, CLIENT_ID], "exactly one"),
        ([US, US, CLIENT_ID], "exactly one"),
        (["https://api.pagerduty.com.evil.example", CLIENT_ID], "exactly one"),
    ],
)
def test_aud_rules(aud: object, claim: str) -> None:
    refused(claims(aud=aud), claim)


def test_azp_must_be_our_client() -> None:
    refused(claims(azp="someone-else"), "azp")
    refused(claims(azp=None), "azp")


def test_exp_with_leeway() -> None:
    assert identify(claims(exp=NOW - 59)).user_id == "PIYKDBN"
    refused(claims(exp=NOW - 60), "exp")
    refused(claims(exp=NOW - 1), "exp", leeway=0)
    assert identify(claims(exp=NOW + 1), leeway=0).user_id == "PIYKDBN"


def test_iat_and_nbf_with_leeway() -> None:
    assert identify(claims(iat=NOW + 60, nbf=NOW + 60)).user_id == "PIYKDBN"
    refused(claims(iat=NOW + 61), "iat")
    refused(claims(nbf=NOW + 61), "nbf")


@pytest.mark.parametrize("name", ["exp", "iat", "nbf"])
@pytest.mark.parametrize(
    "value", ["1800000000", True, None, float("nan"), float("inf"), 10**400, [1]]
)
def test_time_claims_must_be_finite_numbers(name: str, value: object) -> None:
    refused(claims(**{name: value}), name)


@pytest.mark.parametrize("name", ["exp", "iat"])
def test_time_claims_are_required(name: str) -> None:
    refused(claims(**{name: _DROP}), name)


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("sub", _DROP),
        ("sub", ""),
        ("sub", 5),
        ("sub", "a b"),
        ("sub", "x" * 256),
        ("account_id", _DROP),
        ("account_id", "P-1"),
        ("account_id", "x" * 65),
        ("account_id", 12),
        ("user_id", ""),
        ("user_id", "P\u0661"),  # an Arabic-Indic digit
        ("subdomain", "Acme"),
        ("subdomain", "acme.evil.com"),
        ("subdomain", None),
        ("delegation_id", ""),
        ("delegation_id", 3),
        ("delegation_id", "a b"),
    ],
)
def test_identity_claims_are_validated_without_echo(name: str, value: object) -> None:
    error = refused(claims(**{name: value}), name)
    if isinstance(value, str) and len(value) > 2:
        assert value not in str(error)


def test_claims_must_be_a_mapping() -> None:
    refused([("iss", ISSUER)], "object")


@pytest.mark.parametrize(
    "kwargs",
    [
        {"client_id": ""},
        {"issuer": ""},
        {"now": float("nan")},
        {"leeway": -1},
        {"leeway": float("inf")},
        {"api_base_urls": {}},
        {"api_base_urls": {"ap": "https://api.ap.example"}},
        {"api_base_urls": {"us": "api.pagerduty.com"}},
        {"api_base_urls": {"us": US, "eu": US + "/"}},
    ],
)
def test_bad_arguments_are_value_errors(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError):  # noqa: PT011 - each argument has its own message
        identify(CLAIMS, **kwargs)


SECRETISH = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789 .:/-", min_size=8, max_size=30)


@settings(max_examples=100, deadline=None)
@given(
    name=st.sampled_from(
        ["iss", "aud", "azp", "sub", "account_id", "user_id", "subdomain", "delegation_id"]
    ),
    value=SECRETISH,
)
def test_claim_values_never_reach_the_message(name: str, value: str) -> None:
    canary = "Zq9Canary" + value
    message = ""
    try:
        identify(claims(**{name: canary}))
    except IdTokenError as error:
        message = str(error)
    assert "Zq9Canary" not in message


# --- app tokens -------------------------------------------------------------------------------


def test_app_account_from_scopes() -> None:
    assert identity_from_app_scope(
        "as_account-us.companysubdomain incidents.read services.read", BASES
    ) == AppAccount(region="us", subdomain="companysubdomain", api_base_url=US)
    assert identity_from_app_scope(["as_account-eu.acme"], {"eu": EU + "/"}) == AppAccount(
        region="eu", subdomain="acme", api_base_url=EU
    )


@pytest.mark.parametrize(
    ("scopes", "message"),
    [
        ("incidents.read", "exactly one"),
        ("as_account-us.a as_account-eu.b", "exactly one"),
        ("as_account-xx.acme", "malformed"),
        ("as_account-us.ACME", "malformed"),
        ("read\twrite", "malformed"),
    ],
)
def test_app_account_errors(scopes: str, message: str) -> None:
    with pytest.raises(TokenResponseError, match=message):
        identity_from_app_scope(scopes, BASES)


def test_app_account_in_an_unconfigured_region() -> None:
    with pytest.raises(TokenResponseError, match="no API base URL"):
        identity_from_app_scope("as_account-eu.acme", {"us": US})
