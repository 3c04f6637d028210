// Step-up with the official TypeScript MCP SDK: an application that connects with a read grant,
// calls a trade tool, and completes whatever authorization the SDK asks for in Chromium.
// Input (environment):
//   MCP_URL            the MCP endpoint
//   EMAIL, PASSWORD    the person's account
//   STEP_UP            what the person does on the step-up consent screen: "allow" (just clicks
//                      Allow) or a scope to pick first ("mcp:read")
//   CHROMIUM, ARTIFACTS
// Output: one JSON line per step on stdout; the last one is {"event": "end", …}.
import http from 'node:http';
import { randomBytes } from 'node:crypto';
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js';
import { UnauthorizedError } from '@modelcontextprotocol/sdk/client/auth.js';
import { openPerson } from './person.mjs';

const env = (name) => {
  const value = process.env[name];
  if (!value) throw new Error(`${name} is not set`);
  return value;
};
const emit = (event) => process.stdout.write(JSON.stringify(event) + '\n');
const mcpUrl = new URL(env('MCP_URL'));
const stepUp = env('STEP_UP');
// The application gives up after this many authorizations for one operation; the SDK is
// expected to stop well before.
const MAX_AUTHORIZATIONS = 4;

// The client's loopback redirect target (RFC 8252 §7.3): each visit hands its query to the
// authorization in progress.
let expectCallback = null;
const callbackServer = http.createServer((request, response) => {
  const url = new URL(request.url, 'http://127.0.0.1');
  if (url.pathname === '/callback' && expectCallback) {
    expectCallback(url.searchParams);
    expectCallback = null;
  }
  response.writeHead(200, { 'content-type': 'text/plain' });
  response.end('Connected. You can close this window.');
});
await new Promise((resolve) => callbackServer.listen(0, '127.0.0.1', resolve));
const callback = `http://127.0.0.1:${callbackServer.address().port}/callback`;

// An in-memory OAuthClientProvider, as the SDK's interface describes it.
const counts = { authorizations: 0, consents: 0 };
let pendingAuthorization = null;
const provider = {
  _client: undefined,
  _tokens: undefined,
  _verifier: undefined,
  _state: undefined,
  get redirectUrl() { return callback; },
  get clientMetadata() {
    return {
      client_name: 'Step-up check (TypeScript SDK)',
      redirect_uris: [callback],
      grant_types: ['authorization_code', 'refresh_token'],
      response_types: ['code'],
      token_endpoint_auth_method: 'none',
    };
  },
  state() {
    this._state = randomBytes(16).toString('hex');
    return this._state;
  },
  clientInformation() { return this._client; },
  saveClientInformation(information) { this._client = information; },
  tokens() { return this._tokens; },
  saveTokens(tokens) {
    this._tokens = tokens;
    emit({ event: 'tokens', scope: tokens.scope ?? null, refresh: Boolean(tokens.refresh_token) });
  },
  redirectToAuthorization(url) {
    counts.authorizations += 1;
    pendingAuthorization = url;
    emit({ event: 'authorization', n: counts.authorizations, scope: url.searchParams.get('scope') });
  },
  saveCodeVerifier(verifier) { this._verifier = verifier; },
  codeVerifier() { return this._verifier; },
  invalidateCredentials(what) {
    emit({ event: 'invalidate', what });
    if (what === 'all' || what === 'tokens') this._tokens = undefined;
    if (what === 'all' || what === 'client') this._client = undefined;
    if (what === 'all' || what === 'verifier') this._verifier = undefined;
  },
};

const person = await openPerson({
  email: env('EMAIL'),
  password: env('PASSWORD'),
  executablePath: process.env.CHROMIUM ?? '/usr/bin/chromium',
  artifacts: env('ARTIFACTS'),
  label: `ts-${stepUp.replace(':', '-')}`,
});

// What the application does when the SDK asked for authorization: send the person to the URL,
// wait for the client's callback, check its state, and hand the code to the transport.
async function completeAuthorization(transport, choose) {
  const url = pendingAuthorization;
  pendingAuthorization = null;
  if (!url) throw new Error('the SDK asked for authorization without a URL');
  const landed = new Promise((resolve) => { expectCallback = resolve; });
  const seen = await person.authorize(url.href, { choose, callback });
  counts.consents += 1;
  emit({ event: 'consent', ...seen });
  const query = await landed;
  if (query.get('state') !== provider._state) throw new Error('state mismatch on the callback');
  if (!query.get('code')) throw new Error(`no code on the callback: ${query}`);
  await transport.finishAuth(query.get('code'));
}

// Every challenge the server answers with, as the SDK receives it.
const observedFetch = async (input, init) => {
  const response = await fetch(input, init);
  if (response.status === 401 || response.status === 403) {
    emit({ event: 'challenge', status: response.status, www_authenticate: response.headers.get('www-authenticate') });
  }
  return response;
};

const structured = (result) => result.structuredContent
  ?? JSON.parse(result.content?.find((c) => c.type === 'text')?.text ?? 'null');

let client;
let transport;
let outcome = { event: 'end' };
try {
  // 1. Connect: the first authorization, where the person picks Read.
  for (let attempt = 1; ; attempt += 1) {
    client = new Client({ name: 'step-up-check', version: '1.0.0' });
    transport = new StreamableHTTPClientTransport(mcpUrl, { authProvider: provider, fetch: observedFetch });
    try {
      await client.connect(transport);
      break;
    } catch (error) {
      if (!(error instanceof UnauthorizedError) || attempt >= MAX_AUTHORIZATIONS) throw error;
      await completeAuthorization(transport, 'mcp:read');
    }
  }
  emit({ event: 'connected' });

  // 2. The read grant works, and the simulated Add-On is connected before trading.
  let capabilities;
  for (const deadline = Date.now() + 10_000; ;) {
    capabilities = structured(await client.callTool({ name: 'GetMcpCapabilities', arguments: {} }));
    if (capabilities.addon_connected || Date.now() > deadline) break;
    await new Promise((resolve) => setTimeout(resolve, 200));
  }
  emit({ event: 'capabilities', scope: capabilities.scope, addon_connected: capabilities.addon_connected });

  // 3. The trade tool with the read grant: the SDK steps up; the person completes whatever
  // authorization it asks for; the application retries the call.
  const order = {
    account: 'Sim101', instrument: 'ES 12-26', action: 'Buy', order_type: 'Market', quantity: 1,
    idempotency_key: `step-up-${randomBytes(6).toString('hex')}`,
  };
  const choose = stepUp === 'allow' ? null : stepUp;
  for (let attempt = 1; ; attempt += 1) {
    try {
      const result = await client.callTool({ name: 'PlaceOrder', arguments: order });
      outcome.placeOrder = { isError: result.isError ?? false, content: structured(result) };
      break;
    } catch (error) {
      emit({ event: 'call_failed', tool: 'PlaceOrder', name: error.constructor.name, code: error.code ?? null, message: error.message });
      if (!(error instanceof UnauthorizedError) || attempt >= MAX_AUTHORIZATIONS) throw error;
      await completeAuthorization(transport, choose);
    }
  }
  const after = structured(await client.callTool({ name: 'GetMcpCapabilities', arguments: {} }));
  outcome.scopeAfter = after.scope;
} catch (error) {
  outcome.error = { name: error.constructor.name, code: error.code ?? null, message: error.message };
} finally {
  await client?.close().catch(() => {});
  await person.close();
  callbackServer.close();
}
emit({ ...outcome, ...counts });
