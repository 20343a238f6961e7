"""The id_token, JWKS and discovery: signature verifies with joserfc against the served JWKS."""

from __future__ import annotations

import base64
import hashlib

import pytest
from joserfc import jwt
from joserfc.errors import BadSignatureError, InvalidKeyIdError
from joserfc.jwk import KeySet

from pdauth.emulator.config import EmulatorConfig

pytestmark = pytest.mark.anyio

DISCOVERY = "/global/oauth/anonymous/.well-known/openid-configuration"
JWKS = "/global/oauth/anonymous/jwks"


async def _verify(flow, id_token):
    jwks = (await flow.client.get(JWKS)).json()
    return jwt.decode(id_token, KeySet.import_key_set(jwks), algorithms=["RS256"])


async def test_id_token_verifies_against_the_jwks_and_has_pagerduty_claims(flow):
    tokens = await flow.tokens(nonce="n-0S6_WzA2Mj")
    token = await _verify(flow, tokens["id_token"])
    user = flow.state.directory.find_user(flow.us_admin)

    assert token.header["alg"] == "RS256"
    assert token.header["kid"] == flow.state.keys.current_kid
    claims = token.claims
    assert claims["iss"] == "https://app.pagerduty.com/global/oauth/anonymous"
    assert claims["aud"] == ["http://emulator", "pdauth-demo"]
    assert claims["sub"] == user.id
    assert claims["user_id"] == user.id
    assert claims["account_id"] == user.account_id
    assert claims["azp"] == "pdauth-demo"
    assert claims["subdomain"] == "acme"
    assert claims["region"] == "UnitedStates"
    assert claims["purpose"] == "id"
    assert claims["nonce"] == "n-0S6_WzA2Mj"
    assert claims["iat"] == claims["nbf"] == int(flow.start)
    assert claims["exp"] - claims["nbf"] == 3600
    assert claims["auth_time"] == int(flow.start)
    for name in ("jti", "sid", "delegation_id"):
        assert isinstance(claims[name], str)
        assert claims[name]
    digest = hashlib.sha256(tokens["access_token"].encode()).digest()
    expected = base64.urlsafe_b64encode(digest[:16]).rstrip(b"=").decode()
    assert claims["at_hash"] == expected
    issued = flow.state.authenticate(tokens["access_token"])
    assert claims["delegation_id"] == issued.grant_id


async def test_eu_user_aud_names_the_eu_api_base(flow):
    tokens = await flow.tokens(user=flow.eu_admin)
    claims = (await _verify(flow, tokens["id_token"])).claims
    assert claims["aud"] == ["http://emulator/eu", "pdauth-demo"]
    assert claims["region"] == "Europe"
    assert claims["subdomain"] == "eurocorp"


async def test_delegation_id_is_per_grant(flow):
    first = await _verify(flow, (await flow.tokens())["id_token"])
    second = await _verify(flow, (await flow.tokens())["id_token"])
    assert first.claims["delegation_id"] != second.claims["delegation_id"]
    assert first.claims["jti"] != second.claims["jti"]


@pytest.mark.parametrize(
    "emulator_config",
    [EmulatorConfig(public_url="https://pd.test", issuer="https://identity.pd.test/x")],
)
async def test_public_url_and_issuer_are_configurable(flow):
    tokens = await flow.tokens(user=flow.eu_admin)
    claims = (await _verify(flow, tokens["id_token"])).claims
    assert claims["aud"] == ["https://pd.test/eu", "pdauth-demo"]
    assert claims["iss"] == "https://identity.pd.test/x"
    doc = (await flow.client.get(DISCOVERY)).json()
    assert doc["issuer"] == "https://identity.pd.test/x"
    assert doc["token_endpoint"] == "https://pd.test/oauth/token"


async def test_discovery_document(flow):
    response = await flow.client.get(DISCOVERY)
    assert response.status_code == 200
    doc = response.json()
    assert doc["issuer"] == "https://app.pagerduty.com/global/oauth/anonymous"
    assert doc["authorization_endpoint"] == "http://emulator/oauth/authorize"
    assert doc["token_endpoint"] == "http://emulator/oauth/token"
    assert doc["jwks_uri"] == "http://emulator/global/oauth/anonymous/jwks"
    assert doc["response_types_supported"] == ["code"]
    assert doc["code_challenge_methods_supported"] == ["S256"]
    assert doc["id_token_signing_alg_values_supported"] == ["RS256"]
    assert "revocation_endpoint" not in doc  # PagerDuty documents none


async def test_jwks_holds_public_keys_only(flow):
    keys = (await flow.client.get(JWKS)).json()["keys"]
    assert len(keys) == 1
    assert keys[0]["kty"] == "RSA"
    assert keys[0]["kid"] == flow.state.keys.current_kid
    assert not {"d", "p", "q", "dp", "dq", "qi"} & set(keys[0])


async def test_key_rotation_keeping_the_old_key(flow):
    old = (await flow.tokens())["id_token"]
    old_kid = flow.state.keys.current_kid
    rotated = await flow.client.post("/_emulator/keys/rotate")
    assert rotated.status_code == 200
    new_kid = rotated.json()["kid"]
    assert new_kid != old_kid
    assert rotated.json()["kids"] == [new_kid, old_kid]
    new = await _verify(flow, (await flow.tokens())["id_token"])
    assert new.header["kid"] == new_kid
    assert (await _verify(flow, old)).header["kid"] == old_kid


async def test_key_rotation_dropping_the_old_key(flow):
    old = (await flow.tokens())["id_token"]
    rotated = await flow.client.post("/_emulator/keys/rotate", json={"keep_old": False})
    assert rotated.json()["kids"] == [rotated.json()["kid"]]
    with pytest.raises(InvalidKeyIdError):
        await _verify(flow, old)
    bad = await flow.client.post("/_emulator/keys/rotate", json={"keep_old": "no"})
    assert bad.status_code == 400


async def test_a_tampered_id_token_does_not_verify(flow):
    id_token = (await flow.tokens())["id_token"]
    header, payload, signature = id_token.split(".")
    flipped = signature[:-2] + ("AA" if signature[-2:] != "AA" else "BB")
    with pytest.raises(BadSignatureError):
        await _verify(flow, f"{header}.{payload}.{flipped}")
