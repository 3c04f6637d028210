"""Step-up with the official Python MCP SDK: an application that connects with a read grant,
calls a trade tool, and completes whatever authorization the SDK asks for in Chromium (driven
by person.mjs beside this file).

Input (environment): MCP_URL; EMAIL, PASSWORD (the person's account); STEP_UP, what the person
does on the step-up consent screen: "allow" (just clicks Allow) or a scope to pick first
("mcp:read"); CHROMIUM, ARTIFACTS.
Output: one JSON line per step on stdout; the last one is {"event": "end", ...}.
"""

import asyncio
import json
import os
import secrets
import sys
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import httpx2
from mcp import Client
from mcp.client.auth import OAuthClientProvider
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.auth import AuthorizationCodeResult, OAuthClientInformationFull, OAuthClientMetadata, OAuthToken

HERE = Path(__file__).resolve().parent


def emit(event: dict) -> None:
    sys.stdout.write(json.dumps(event) + "\n")
    sys.stdout.flush()


class MemoryStorage:
    """The SDK's TokenStorage, in memory, reporting every token it is given."""

    def __init__(self) -> None:
        self.tokens: OAuthToken | None = None
        self.client: OAuthClientInformationFull | None = None

    async def get_tokens(self) -> OAuthToken | None:
        return self.tokens

    async def set_tokens(self, tokens: OAuthToken) -> None:
        self.tokens = tokens
        emit({"event": "tokens", "scope": tokens.scope, "refresh": tokens.refresh_token is not None})

    async def get_client_info(self) -> OAuthClientInformationFull | None:
        return self.client

    async def set_client_info(self, client_info: OAuthClientInformationFull) -> None:
        self.client = client_info


class Callback:
    """The client's loopback redirect target (RFC 8252 §7.3)."""

    def __init__(self) -> None:
        self.waiting: asyncio.Future[dict[str, str]] | None = None
        self.server: asyncio.Server | None = None
        self.url = ""

    async def start(self) -> None:
        self.server = await asyncio.start_server(self.serve, "127.0.0.1", 0)
        port = self.server.sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}/callback"

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        request_line = (await reader.readline()).decode()
        while (await reader.readline()).strip():
            pass
        target = urlsplit(request_line.split(" ")[1] if " " in request_line else "/")
        if target.path == "/callback" and self.waiting is not None and not self.waiting.done():
            self.waiting.set_result({k: v[0] for k, v in parse_qs(target.query).items()})
        body = b"Connected. You can close this window."
        writer.write(
            b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\nconnection: close\r\n"
            + f"content-length: {len(body)}\r\n\r\n".encode()
            + body
        )
        await writer.drain()
        writer.close()

    def expect(self) -> None:
        self.waiting = asyncio.get_running_loop().create_future()

    async def received(self) -> dict[str, str]:
        assert self.waiting is not None
        return await asyncio.wait_for(self.waiting, 30)


class Person:
    """person.mjs in a child process: one authorization per request line."""

    def __init__(self, label: str) -> None:
        self.label = label
        self.process: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        self.process = await asyncio.create_subprocess_exec(
            "node",
            str(HERE / "person.mjs"),
            cwd=HERE,
            env={**os.environ, "LABEL": self.label},
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
        )

    async def authorize(self, url: str, choose: str | None, callback: str) -> dict:
        assert self.process is not None and self.process.stdin and self.process.stdout
        self.process.stdin.write((json.dumps({"url": url, "choose": choose, "callback": callback}) + "\n").encode())
        await self.process.stdin.drain()
        seen = json.loads(await asyncio.wait_for(self.process.stdout.readline(), 60))
        if "error" in seen:
            raise RuntimeError(f"the person could not complete the authorization: {seen['error']}")
        return seen

    async def close(self) -> None:
        if self.process is not None and self.process.stdin:
            self.process.stdin.close()
            await asyncio.wait_for(self.process.wait(), 30)


def described(error: BaseException) -> dict:
    """The error the application sees, unwrapped from the task groups it crossed."""
    while isinstance(error, BaseExceptionGroup) and len(error.exceptions) == 1:
        error = error.exceptions[0]
    return {"name": type(error).__name__, "code": getattr(error, "code", None), "message": str(error)}


def structured(result) -> dict:
    if result.structured_content is not None:
        return result.structured_content
    return json.loads(result.content[0].text)


async def main() -> None:
    mcp_url = os.environ["MCP_URL"]
    step_up = os.environ["STEP_UP"]
    counts = {"authorizations": 0, "consents": 0}
    callback = Callback()
    await callback.start()
    person = Person(f"py-{step_up.replace(':', '-')}")
    await person.start()

    async def redirect_handler(url: str) -> None:
        counts["authorizations"] += 1
        scope = parse_qs(urlsplit(url).query).get("scope", [None])[0]
        emit({"event": "authorization", "n": counts["authorizations"], "scope": scope})
        # The first authorization connects with Read; later ones are the step-up.
        first = counts["authorizations"] == 1
        choose = "mcp:read" if first else (None if step_up == "allow" else step_up)
        callback.expect()
        seen = await person.authorize(url, choose, callback.url)
        counts["consents"] += 1
        emit({"event": "consent", **seen})

    async def callback_handler() -> AuthorizationCodeResult:
        query = await callback.received()
        return AuthorizationCodeResult(code=query["code"], state=query.get("state"), iss=query.get("iss"))

    provider = OAuthClientProvider(
        server_url=mcp_url,
        client_metadata=OAuthClientMetadata(
            client_name="Step-up check (Python SDK)",
            redirect_uris=[callback.url],
            grant_types=["authorization_code", "refresh_token"],
            response_types=["code"],
            token_endpoint_auth_method="none",
        ),
        storage=MemoryStorage(),
        redirect_handler=redirect_handler,
        callback_handler=callback_handler,
    )

    outcome: dict = {"event": "end"}
    try:
        async def on_response(response: httpx2.Response) -> None:
            # Every challenge the server answers with, as the SDK receives it.
            if response.status_code in (401, 403):
                emit(
                    {
                        "event": "challenge",
                        "status": response.status_code,
                        "www_authenticate": response.headers.get("www-authenticate"),
                    }
                )

        async with httpx2.AsyncClient(
            auth=provider, timeout=httpx2.Timeout(30), event_hooks={"response": [on_response]}
        ) as http:
            async with Client(streamable_http_client(mcp_url, http_client=http)) as client:
                emit({"event": "connected"})
                # The read grant works, and the simulated Add-On is connected before trading.
                loop = asyncio.get_running_loop()
                deadline = loop.time() + 10
                while True:
                    capabilities = structured(await client.call_tool("GetMcpCapabilities", {}))
                    if capabilities["addon_connected"] or loop.time() > deadline:
                        break
                    await asyncio.sleep(0.2)
                emit(
                    {
                        "event": "capabilities",
                        "scope": capabilities["scope"],
                        "addon_connected": capabilities["addon_connected"],
                    }
                )
                order = {
                    "account": "Sim101",
                    "instrument": "ES 12-26",
                    "action": "Buy",
                    "order_type": "Market",
                    "quantity": 1,
                    "idempotency_key": f"step-up-{secrets.token_hex(6)}",
                }
                # The SDK steps up inside the call: the application calls once.
                try:
                    result = await client.call_tool("PlaceOrder", order)
                except Exception as error:
                    emit({"event": "call_failed", "tool": "PlaceOrder", **described(error)})
                    outcome["error"] = described(error)
                else:
                    outcome["placeOrder"] = {"isError": bool(result.is_error), "content": structured(result)}
                    after = structured(await client.call_tool("GetMcpCapabilities", {}))
                    outcome["scopeAfter"] = after["scope"]
    except Exception as error:
        outcome["error"] = described(error)
    finally:
        await person.close()
        if callback.server is not None:
            callback.server.close()
    emit({**outcome, **counts})


if __name__ == "__main__":
    asyncio.run(main())
