//! MCP resource server at `/v1/api/mcp`: Streamable HTTP JSON-RPC for every published protocol
//! revision, the tool catalog, and scope- and tier-gated dispatch. Reaches the OAuth crate only
//! through its own `TokenVerifier` trait and the Add-On bridge only through its `ToolRelay` trait.
