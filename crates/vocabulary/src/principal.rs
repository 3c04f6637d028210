//! Who is calling the MCP endpoint: what a verified access token says.

use uuid::Uuid;

use crate::Scope;

/// The caller of one MCP request: the user, the client acting for them, the grant the access
/// token belongs to and the scope it carries. Produced by the OAuth server's verification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub user_id: Uuid,
    pub client_id: String,
    pub grant_id: Uuid,
    pub scope: Scope,
}
