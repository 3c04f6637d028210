"""Trade confirmation inside the client, with the official Python MCP SDK: an application that
answers elicitation forms places an order; the person (this script's form callback) accepts or
declines the form the server asks with.

Input (environment): MCP_URL; TOKEN, an access token with mcp:trade; MODE, the SDK's connection
mode ("legacy": initialize at 2025-11-25 and the form on the POST's event stream; "2026-07-28":
the form in an input_required result and a retry); ANSWER, what the person does: "accept" or
"decline"; KEY, the order's idempotency key.
Output: one JSON line per step on stdout; the last one is {"event": "end", ...}.
"""

import asyncio
import json
import os
import sys

import httpx2
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp_types import ElicitResult


def emit(event: dict) -> None:
    sys.stdout.write(json.dumps(event) + "\n")
    sys.stdout.flush()


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
    answer = os.environ["ANSWER"]
    forms = []

    async def person(context, params) -> ElicitResult:
        schema = params.requested_schema
        forms.append(params)
        emit(
            {
                "event": "form",
                "mode": getattr(params, "mode", None),
                "message": params.message,
                "fields": {
                    name: field.get("default") if isinstance(field, dict) else None
                    for name, field in (schema.get("properties", {}) if isinstance(schema, dict) else {}).items()
                },
            }
        )
        if answer == "accept":
            return ElicitResult(action="accept", content={"confirm": True})
        return ElicitResult(action="decline")

    outcome: dict = {"event": "end"}
    headers = {"Authorization": f"Bearer {os.environ['TOKEN']}"}
    try:
        async with httpx2.AsyncClient(headers=headers, timeout=httpx2.Timeout(60)) as http:
            async with Client(
                streamable_http_client(os.environ["MCP_URL"], http_client=http),
                elicitation_callback=person,
                mode=os.environ["MODE"],
            ) as client:
                loop = asyncio.get_running_loop()
                deadline = loop.time() + 10
                while True:
                    capabilities = structured(await client.call_tool("GetMcpCapabilities", {}))
                    if capabilities["addon_connected"] or loop.time() > deadline:
                        break
                    await asyncio.sleep(0.2)
                order = {
                    "account": "Sim101",
                    "instrument": "ES 12-26",
                    "action": "Buy",
                    "order_type": "Limit",
                    "quantity": 1,
                    "limit_price": 4000.25,
                    "idempotency_key": os.environ["KEY"],
                }
                try:
                    result = await client.call_tool("PlaceOrder", order)
                except Exception as error:
                    outcome["error"] = described(error)
                else:
                    outcome["placeOrder"] = {"isError": bool(result.is_error), "content": structured(result)}
                orders = structured(
                    await client.call_tool("GetOrders", {"account": "Sim101", "instrument": "ES 12-26", "state": "all"})
                )
                outcome["orders"] = orders["orders"]
                outcome["confirmations"] = structured(await client.call_tool("GetTradeConfirmations", {}))[
                    "confirmations"
                ]
    except Exception as error:
        outcome["error"] = described(error)
    outcome["forms"] = len(forms)
    emit(outcome)


if __name__ == "__main__":
    asyncio.run(main())
