"""Baseline: the official MCP Python SDK's MCPServer (FastMCP before mcp 2) with a token verifier.

One tool equivalent to CrossTrade's GetMcpCapabilities, stateless Streamable HTTP with JSON
responses, served by uvicorn. The verifier checks the same Ed25519 access tokens the CrossTrade
server issues (signature against its JWKS, iss, aud, exp), with PyJWT.

usage: python py-server.py PORT ISSUER   (ISSUER: the CrossTrade server's public_url)
"""

import json
import sys
import urllib.request

import jwt
import uvicorn
from mcp.server.auth.provider import AccessToken
from mcp.server.auth.settings import AuthSettings
from mcp.server.mcpserver import MCPServer

PORT = int(sys.argv[1])
ISSUER = sys.argv[2]
RESOURCE = f"{ISSUER}/v1/api/mcp"

with urllib.request.urlopen(f"{ISSUER}/v1/oauth/mcp/jwks") as response:
    KEYS = {key["kid"]: jwt.PyJWK(key) for key in json.load(response)["keys"]}


class JwtVerifier:
    async def verify_token(self, token: str) -> AccessToken | None:
        try:
            key = KEYS[jwt.get_unverified_header(token)["kid"]]
            claims = jwt.decode(
                token, key, algorithms=["EdDSA"], audience=RESOURCE, issuer=ISSUER
            )
        except (jwt.PyJWTError, KeyError):
            return None
        return AccessToken(
            token=token,
            client_id=claims["client_id"],
            scopes=claims["scope"].split(" "),
            expires_at=claims["exp"],
            resource=RESOURCE,
            subject=claims["sub"],
        )


server = MCPServer(
    "baseline-py",
    token_verifier=JwtVerifier(),
    auth=AuthSettings(
        issuer_url=ISSUER, resource_server_url=RESOURCE, required_scopes=["mcp:read"]
    ),
    log_level="WARNING",
)


@server.tool(name="GetMcpCapabilities")
def get_mcp_capabilities() -> str:
    """Report what this MCP connection can do right now."""
    return json.dumps(
        {
            "addon_connected": False,
            "scope": "mcp:read mcp:trade",
            "tier": "elite",
            "protocol_version": "2025-11-25",
            "server_version": "1.0.0",
        }
    )


app = server.streamable_http_app(stateless_http=True, json_response=True, streamable_http_path="/mcp")
uvicorn.run(app, host="127.0.0.1", port=PORT, log_level="warning", access_log=False)
