//! OAuth 2.1 authorization server for MCP clients: RFC 8414 and RFC 9728 discovery, RFC 7591
//! registration, sign-in and consent, the token endpoint, RFC 7009 revocation, and access-token
//! verification. Depends on `store` only; never on `mcp` or `addon-bridge`.
