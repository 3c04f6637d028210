//! An extension point for test harnesses: methods, tools and capabilities added to the
//! endpoint, consulted only by a state built [`with_extension`](crate::McpState::with_extension).
//! The binary builds none; the `conformance` crate's fixtures are the one implementation.

use serde_json::Value;

use crate::protocol::{Request, Revision, RpcError};

pub trait Extension: Send + Sync + 'static {
    /// Adds to the capabilities announced by `initialize` (`per_request: false`) or
    /// `server/discover` (`true`).
    fn extend_capabilities(&self, per_request: bool, capabilities: &mut Value);

    /// Adds tools to a `tools/list` result.
    fn extend_tool_list(&self, revision: Revision, result: &mut Value);

    /// Answers a request itself, or `None` to let the endpoint answer it.
    fn serve(&self, revision: Revision, request: &Request) -> Option<Result<Value, RpcError>>;
}
