// Baseline: the official MCP TypeScript SDK's Streamable HTTP server behind its
// requireBearerAuth middleware, with one tool equivalent to CrossTrade's GetMcpCapabilities.
// Stateless (no session), JSON responses, the per-request server and transport the SDK
// documents for stateless mode. The verifier checks the same Ed25519 access tokens the
// CrossTrade server issues (signature against its JWKS, iss, aud, exp), with jose.
//
// usage: node ts-server.mjs PORT ISSUER   (ISSUER: the CrossTrade server's public_url)
import { McpServer } from '@modelcontextprotocol/sdk/server/mcp.js';
import { StreamableHTTPServerTransport } from '@modelcontextprotocol/sdk/server/streamableHttp.js';
import { createMcpExpressApp } from '@modelcontextprotocol/sdk/server/express.js';
import { requireBearerAuth } from '@modelcontextprotocol/sdk/server/auth/middleware/bearerAuth.js';
import { InvalidTokenError } from '@modelcontextprotocol/sdk/server/auth/errors.js';
import { createLocalJWKSet, jwtVerify } from 'jose';

const port = Number(process.argv[2]);
const issuer = process.argv[3];
const resource = `${issuer}/v1/api/mcp`;
const jwks = createLocalJWKSet(await (await fetch(`${issuer}/v1/oauth/mcp/jwks`)).json());

const verifier = {
  async verifyAccessToken(token) {
    try {
      const { payload } = await jwtVerify(token, jwks, {
        issuer, audience: resource, algorithms: ['EdDSA'], typ: 'at+jwt',
      });
      return {
        token, clientId: payload.client_id, scopes: String(payload.scope).split(' '),
        expiresAt: payload.exp, resource: new URL(resource), extra: { sub: payload.sub },
      };
    } catch (err) {
      throw new InvalidTokenError(String(err));
    }
  },
};

function buildServer() {
  const server = new McpServer({ name: 'baseline-ts', version: '1.0.0' });
  server.registerTool('GetMcpCapabilities', {
    description: 'Report what this MCP connection can do right now.',
  }, async (extra) => {
    const capabilities = {
      addon_connected: false, scope: extra.authInfo?.scopes.join(' '), tier: 'elite',
      protocol_version: '2025-11-25', server_version: '1.0.0',
    };
    return { content: [{ type: 'text', text: JSON.stringify(capabilities) }] };
  });
  return server;
}

const app = createMcpExpressApp();
const auth = requireBearerAuth({
  verifier, requiredScopes: ['mcp:read'], expectedResource: new URL(resource),
  resourceMetadataUrl: `${issuer}/.well-known/oauth-protected-resource`,
});
app.post('/mcp', auth, async (req, res) => {
  const server = buildServer();
  const transport = new StreamableHTTPServerTransport({
    sessionIdGenerator: undefined, enableJsonResponse: true,
  });
  res.on('close', () => { transport.close(); server.close(); });
  await server.connect(transport);
  await transport.handleRequest(req, res, req.body);
});
app.listen(port, '127.0.0.1', () => console.log(`baseline-ts listening on ${port}`));
