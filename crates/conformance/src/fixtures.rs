//! Test-only fixtures of the official MCP conformance suite (npm
//! `@modelcontextprotocol/conformance`): the tools, resources, prompts, completion and logging
//! methods its scenarios call, shaped like the suite's reference "everything" server.
//!
//! They live in this test-harness crate, outside the server's code: a state serves them only
//! when built `with_extension(Arc::new(Fixtures))`, which the binary never does. Nothing here
//! reaches the database, the relay or a user's NinjaTrader 8.

use serde_json::{Map, Value, json};

mod input_required;

use axum::http::StatusCode;

use mcp::protocol::{META_CLIENT_CAPABILITIES, Request, Revision, RpcError};

/// The conformance suite's fixtures, as an extension of the MCP endpoint.
#[derive(Debug, Clone, Copy, Default)]
pub struct Fixtures;

impl mcp::extension::Extension for Fixtures {
    fn extend_capabilities(&self, per_request: bool, capabilities: &mut Value) {
        extend_capabilities(per_request, capabilities);
    }

    fn extend_tool_list(&self, revision: Revision, result: &mut Value) {
        extend_tool_list(revision, result);
    }

    fn serve(&self, revision: Revision, request: &Request) -> Option<Result<Value, RpcError>> {
        serve(revision, request)
    }
}

/// A 1×1 PNG.
const IMAGE_PNG: &str = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8DwHwAFBQIAX8jx0gAAAABJRU5ErkJggg==";
/// A minimal WAV file.
const AUDIO_WAV: &str = "UklGRiYAAABXQVZFZm10IBAAAAABAAEAQB8AAAB9AAACABAAZGF0YQIAAAA=";

const TEMPLATE_PREFIX: &str = "test://template/";
const TEMPLATE_SUFFIX: &str = "/data";

/// The fixture tools: name, description. None takes arguments.
const TOOLS: [(&str, &str); 6] = [
    ("test_simple_text", "Tests simple text content response"),
    ("test_image_content", "Tests image content response"),
    ("test_audio_content", "Tests audio content response"),
    (
        "test_embedded_resource",
        "Tests embedded resource content response",
    ),
    (
        "test_multiple_content_types",
        "Tests response with multiple content types (text, image, resource)",
    ),
    ("test_error_handling", "Tests error response handling"),
];

/// Diagnostic tools of the 2026-07-28 `server-stateless` scenario, served per request only.
const PER_REQUEST_TOOLS: [(&str, &str); 3] = [
    (
        "test_missing_capability",
        "Needs the client's sampling capability; without it answers -32021",
    ),
    (
        "test_logging_tool",
        "Would log, but only at a level the request set",
    ),
    (
        "test_streaming_elicitation",
        "Answers on the request's own response, never with an independent request",
    ),
];

/// -32021 (2026-07-28 basic/index, "Error Codes").
const MISSING_REQUIRED_CLIENT_CAPABILITY: i64 = -32021;
/// Caching hints of the fixtures' results (2026-07-28 server/utilities/caching).
const TTL_MS: u64 = 300_000;

/// Adds the fixture capabilities to the `capabilities` of an `initialize` result, or of a
/// `server/discover` result (`per_request`), where subscriptions and logging levels no longer
/// exist (2026-07-28 removed `resources/subscribe` and `logging/setLevel`).
fn extend_capabilities(per_request: bool, capabilities: &mut Value) {
    if let Some(capabilities) = capabilities.as_object_mut() {
        capabilities.insert("prompts".into(), json!({}));
        capabilities.insert("completions".into(), json!({}));
        if per_request {
            capabilities.insert("resources".into(), json!({}));
        } else {
            capabilities.insert("resources".into(), json!({ "subscribe": true }));
            capabilities.insert("logging".into(), json!({}));
        }
    }
}

/// Appends the fixture tools to a `tools/list` result.
fn extend_tool_list(revision: Revision, result: &mut Value) {
    let per_request: &[(&str, &str)] = if revision.is_modern() {
        &PER_REQUEST_TOOLS
    } else {
        &[]
    };
    let input_required: &[(&str, &str)] = if revision.is_modern() {
        &input_required::TOOLS
    } else {
        &[]
    };
    let tools_here = TOOLS.iter().chain(per_request).chain(input_required);
    if let Some(tools) = result.get_mut("tools").and_then(Value::as_array_mut) {
        tools.extend(tools_here.map(|(name, description)| {
            json!({
                "name": name,
                "description": description,
                "inputSchema": { "type": "object", "properties": {} },
            })
        }));
        tools.push(json_schema_tool());
    }
}

/// SEP-1613 / SEP-2106: a tool whose input schema uses JSON Schema 2020-12 (`$schema`,
/// `$defs` with `$anchor`, `$ref`, composition, conditionals), listed exactly as written.
const JSON_SCHEMA_TOOL: &str = "json_schema_2020_12_tool";

fn json_schema_tool() -> Value {
    json!({
        "name": JSON_SCHEMA_TOOL,
        "description": "Takes arguments described with JSON Schema 2020-12 features",
        "inputSchema": {
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            "type": "object",
            "$defs": {
                "address": {
                    "$anchor": "addressDef",
                    "type": "object",
                    "properties": { "street": { "type": "string" }, "city": { "type": "string" } },
                },
            },
            "properties": {
                "name": { "type": "string" },
                "address": { "$ref": "#/$defs/address" },
                "contactMethod": { "type": "string", "enum": ["phone", "email"] },
                "phone": { "type": "string" },
                "email": { "type": "string" },
            },
            "allOf": [{ "anyOf": [{ "required": ["phone"] }, { "required": ["email"] }] }],
            "if": {
                "properties": { "contactMethod": { "const": "phone" } },
                "required": ["contactMethod"],
            },
            "then": { "required": ["phone"] },
            "else": { "required": ["email"] },
            "additionalProperties": false,
        },
    })
}

/// Serves `request` when it is a fixture's; `None` leaves it to the real dispatcher (which
/// answers methods the revision lacks with -32601).
fn serve(revision: Revision, request: &Request) -> Option<Result<Value, RpcError>> {
    let params = &request.params;
    let text = |field: &str| params.get(field).and_then(Value::as_str);
    let modern = revision.is_modern();
    let outcome = match request.method.as_str() {
        "tools/call" => {
            let name = text("name")?;
            if modern
                && let Some(outcome) = call_diagnostic_tool(name, params)
                    .or_else(|| input_required::call_tool(name, params))
            {
                return Some(outcome);
            }
            return call_tool(name).map(Ok);
        }
        "resources/list" => Ok(json!({ "resources": resources() })),
        "resources/templates/list" => Ok(json!({
            "resourceTemplates": [{
                "uriTemplate": format!("{TEMPLATE_PREFIX}{{id}}{TEMPLATE_SUFFIX}"),
                "name": "template",
                "title": "Resource Template",
                "description": "A resource template with parameter substitution",
                "mimeType": "application/json",
            }],
        })),
        "resources/read" => read_resource(text("uri").unwrap_or("")),
        "resources/subscribe" | "resources/unsubscribe" | "logging/setLevel" if !modern => {
            Ok(json!({}))
        }
        "prompts/list" => {
            let mut prompts = prompts();
            if modern && let Some(list) = prompts.as_array_mut() {
                list.push(json!({
                    "name": input_required::PROMPT,
                    "description": "Asks the client for context before building the prompt",
                }));
            }
            Ok(json!({ "prompts": prompts }))
        }
        "prompts/get" if modern && text("name") == Some(input_required::PROMPT) => {
            input_required::get_prompt(params)
        }
        "prompts/get" => get_prompt(
            text("name").unwrap_or(""),
            params.get("arguments").and_then(Value::as_object),
        ),
        "completion/complete" => Ok(json!({
            "completion": { "values": [], "total": 0, "hasMore": false },
        })),
        _ => return None,
    };
    let cacheable = matches!(
        request.method.as_str(),
        "resources/list" | "resources/templates/list" | "resources/read" | "prompts/list"
    );
    Some(outcome.map(|mut result| {
        if modern
            && cacheable
            && let Some(object) = result.as_object_mut()
        {
            object.insert("ttlMs".into(), json!(TTL_MS));
            object.insert("cacheScope".into(), json!("public"));
        }
        result
    }))
}

fn call_diagnostic_tool(
    name: &str,
    params: &Map<String, Value>,
) -> Option<Result<Value, RpcError>> {
    let text =
        |text: &str| json!({ "content": [{ "type": "text", "text": text }], "isError": false });
    match name {
        "test_missing_capability" => {
            let declared = params
                .get("_meta")
                .and_then(|meta| meta.get(META_CLIENT_CAPABILITIES))
                .and_then(|capabilities| capabilities.get("sampling"))
                .is_some();
            Some(if declared {
                Ok(text("The client declared sampling."))
            } else {
                Err(RpcError {
                    status: StatusCode::BAD_REQUEST,
                    code: MISSING_REQUIRED_CLIENT_CAPABILITY,
                    message: "Missing required client capability: sampling".into(),
                    data: Some(json!({ "requiredCapabilities": { "sampling": {} } })),
                })
            })
        }
        // No `logLevel` in `_meta` means no `notifications/message`; this server sends none.
        "test_logging_tool" => Some(Ok(text(
            "Nothing was logged: the request set no log level.",
        ))),
        "test_streaming_elicitation" => Some(Ok(text("Answered without an independent request."))),
        _ => None,
    }
}

fn call_tool(name: &str) -> Option<Value> {
    let content = match name {
        "test_simple_text" => json!([
            { "type": "text", "text": "This is a simple text response for testing." }
        ]),
        "test_image_content" => json!([
            { "type": "image", "data": IMAGE_PNG, "mimeType": "image/png" }
        ]),
        "test_audio_content" => json!([
            { "type": "audio", "data": AUDIO_WAV, "mimeType": "audio/wav" }
        ]),
        "test_embedded_resource" => json!([{
            "type": "resource",
            "resource": {
                "uri": "test://embedded-resource",
                "mimeType": "text/plain",
                "text": "This is an embedded resource content.",
            },
        }]),
        "test_multiple_content_types" => json!([
            { "type": "text", "text": "Multiple content types test:" },
            { "type": "image", "data": IMAGE_PNG, "mimeType": "image/png" },
            {
                "type": "resource",
                "resource": {
                    "uri": "test://mixed-content-resource",
                    "mimeType": "application/json",
                    "text": json!({ "test": "data", "value": 123 }).to_string(),
                },
            },
        ]),
        JSON_SCHEMA_TOOL => json!([{ "type": "text", "text": "Arguments received." }]),
        "test_error_handling" => {
            return Some(json!({
                "content": [{
                    "type": "text",
                    "text": "This tool intentionally returns an error for testing",
                }],
                "isError": true,
            }));
        }
        _ => return None,
    };
    Some(json!({ "content": content, "isError": false }))
}

fn resources() -> Value {
    json!([
        {
            "uri": "test://static-text",
            "name": "static-text",
            "title": "Static Text Resource",
            "description": "A static text resource for testing",
            "mimeType": "text/plain",
        },
        {
            "uri": "test://static-binary",
            "name": "static-binary",
            "title": "Static Binary Resource",
            "description": "A static binary resource (image) for testing",
            "mimeType": "image/png",
        },
        {
            "uri": "test://watched-resource",
            "name": "watched-resource",
            "title": "Watched Resource",
            "description": "A resource clients may subscribe to",
            "mimeType": "text/plain",
        },
    ])
}

fn read_resource(uri: &str) -> Result<Value, RpcError> {
    let content = match uri {
        "test://static-text" => json!({
            "uri": uri,
            "mimeType": "text/plain",
            "text": "This is the content of the static text resource.",
        }),
        "test://static-binary" => json!({ "uri": uri, "mimeType": "image/png", "blob": IMAGE_PNG }),
        "test://watched-resource" => json!({
            "uri": uri,
            "mimeType": "text/plain",
            "text": "Watched resource content",
        }),
        _ => {
            let id = uri
                .strip_prefix(TEMPLATE_PREFIX)
                .and_then(|rest| rest.strip_suffix(TEMPLATE_SUFFIX))
                .filter(|id| !id.is_empty() && !id.contains('/'));
            // 2026-07-28 server/resources "Error Handling" (SEP-2164): -32602 naming the URI.
            let Some(id) = id else {
                let mut error = RpcError::invalid_params(format!("Resource not found: {uri}"));
                error.data = Some(json!({ "uri": uri }));
                return Err(error);
            };
            json!({
                "uri": uri,
                "mimeType": "application/json",
                "text": json!({
                    "id": id,
                    "templateTest": true,
                    "data": format!("Data for ID: {id}"),
                })
                .to_string(),
            })
        }
    };
    Ok(json!({ "contents": [content] }))
}

fn prompts() -> Value {
    json!([
        {
            "name": "test_simple_prompt",
            "title": "Simple Test Prompt",
            "description": "A simple prompt without arguments",
        },
        {
            "name": "test_prompt_with_arguments",
            "title": "Prompt With Arguments",
            "description": "A prompt with required arguments",
            "arguments": [
                { "name": "arg1", "description": "First test argument", "required": true },
                { "name": "arg2", "description": "Second test argument", "required": true },
            ],
        },
        {
            "name": "test_prompt_with_embedded_resource",
            "title": "Prompt With Embedded Resource",
            "description": "A prompt that includes an embedded resource",
            "arguments": [
                {
                    "name": "resourceUri",
                    "description": "URI of the resource to embed",
                    "required": true,
                },
            ],
        },
        {
            "name": "test_prompt_with_image",
            "title": "Prompt With Image",
            "description": "A prompt that includes image content",
        },
    ])
}

fn get_prompt(name: &str, arguments: Option<&Map<String, Value>>) -> Result<Value, RpcError> {
    let argument = |key: &str| {
        arguments
            .and_then(|arguments| arguments.get(key))
            .and_then(Value::as_str)
            .ok_or_else(|| RpcError::invalid_params(format!("Missing required argument: {key}")))
    };
    let user = |content: Value| json!({ "role": "user", "content": content });
    let messages = match name {
        "test_simple_prompt" => vec![user(
            json!({ "type": "text", "text": "This is a simple prompt for testing." }),
        )],
        "test_prompt_with_arguments" => {
            let (arg1, arg2) = (argument("arg1")?, argument("arg2")?);
            vec![user(json!({
                "type": "text",
                "text": format!("Prompt with arguments: arg1='{arg1}', arg2='{arg2}'"),
            }))]
        }
        "test_prompt_with_embedded_resource" => {
            let uri = argument("resourceUri")?;
            vec![
                user(json!({
                    "type": "resource",
                    "resource": {
                        "uri": uri,
                        "mimeType": "text/plain",
                        "text": "Embedded resource content for testing.",
                    },
                })),
                user(json!({
                    "type": "text",
                    "text": "Please process the embedded resource above.",
                })),
            ]
        }
        "test_prompt_with_image" => vec![
            user(json!({ "type": "image", "data": IMAGE_PNG, "mimeType": "image/png" })),
            user(json!({ "type": "text", "text": "Please analyze the image above." })),
        ],
        _ => return Err(RpcError::invalid_params(format!("Unknown prompt: {name}"))),
    };
    Ok(json!({ "messages": messages }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use mcp::protocol::INVALID_PARAMS;

    fn request(method: &str, params: Value) -> Request {
        let Value::Object(params) = params else {
            unreachable!()
        };
        Request {
            id: json!(1),
            method: method.into(),
            params,
        }
    }

    #[test]
    fn only_fixture_requests_are_served() {
        let legacy = Revision::V2025_11_25;
        let modern = Revision::V2026_07_28;
        let call = |name: &str| request("tools/call", json!({ "name": name }));
        assert!(serve(legacy, &call("GetAccounts")).is_none());
        assert!(serve(legacy, &request("tools/list", json!({}))).is_none());
        assert!(serve(modern, &request("logging/setLevel", json!({}))).is_none());
        assert!(serve(legacy, &call("test_missing_capability")).is_none());
        let refused = serve(modern, &call("test_missing_capability")).unwrap();
        assert_eq!(
            refused.unwrap_err().code,
            MISSING_REQUIRED_CLIENT_CAPABILITY
        );
        let simple = serve(legacy, &call("test_simple_text"));
        assert_eq!(
            simple.unwrap().unwrap()["content"][0]["type"],
            json!("text")
        );
    }

    #[test]
    fn template_and_missing_resources() {
        let read = read_resource("test://template/123/data").unwrap();
        assert!(
            read["contents"][0]["text"]
                .as_str()
                .unwrap()
                .contains("Data for ID: 123")
        );
        let missing = read_resource("test://nope").unwrap_err();
        assert_eq!(
            (missing.code, missing.data),
            (INVALID_PARAMS, Some(json!({ "uri": "test://nope" })))
        );
    }
}
