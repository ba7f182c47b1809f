// A real OpenID provider (panva's oidc-provider, certified) playing the national identity
// provider (ID-porten, a health-personnel eID) in tests. Configuration comes as JSON in
// OP_CONFIG (see tests/support/oidc_op.py); the issuer is http://127.0.0.1:<port>, printed
// as `listening <issuer>` once it accepts connections. Only the login screen is ours: a
// form that takes a synthetic identity number and an assurance level, or "cancel" (the
// user refuses).
import http from 'node:http';
import Provider from 'oidc-provider';

const config = JSON.parse(process.env.OP_CONFIG);
const codeTtl = Object.fromEntries(config.clients.map((c) => [c.client_id, c.code_ttl || 60]));

// Bind port 0 first: the issuer names the port the system gave us.
const server = http.createServer();
await new Promise((resolve) => { server.listen(0, '127.0.0.1', resolve); });
const issuer = `http://127.0.0.1:${server.address().port}`;

const provider = new Provider(issuer, {
  jwks: { keys: [config.signing_jwk] },
  clients: config.clients.map((c) => ({
    client_id: c.client_id,
    token_endpoint_auth_method: 'private_key_jwt',
    token_endpoint_auth_signing_alg: 'ES256',
    id_token_signed_response_alg: 'ES256',
    jwks: { keys: [c.public_jwk] },
    grant_types: ['authorization_code'],
    response_types: ['code'],
    redirect_uris: c.redirect_uris,
  })),
  claims: { openid: ['sub', 'pid'] },
  conformIdTokenClaims: false, // `pid` in the ID token, as ID-porten does
  acrValues: ['idporten-loa-substantial', 'idporten-loa-high'],
  cookies: { keys: [config.cookie_key] },
  enabledJWA: { clientAuthSigningAlgValues: ['ES256'], idTokenSigningAlgValues: ['ES256'] },
  pkce: { required: () => true },
  ttl: { AuthorizationCode: (ctx, code, client) => codeTtl[client.clientId] || 60 },
  features: {
    devInteractions: { enabled: false },
    pushedAuthorizationRequests: { enabled: true, requirePushedAuthorizationRequests: false },
  },
  async findAccount(ctx, id) {
    return { accountId: id, async claims() { return { sub: id, pid: id }; } };
  },
  interactions: { url: (ctx, interaction) => `/interaction/${interaction.uid}` },
});
provider.on('server_error', (ctx, err) => console.error('server_error', err));

const escape = (s) => String(s).replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);

function readForm(req) {
  return new Promise((resolve, reject) => {
    let body = '';
    req.on('data', (chunk) => { body += chunk; });
    req.on('end', () => resolve(Object.fromEntries(new URLSearchParams(body))));
    req.on('error', reject);
  });
}

async function interaction(req, res, uid) {
  const details = await provider.interactionDetails(req, res);
  if (req.method === 'GET') {
    res.setHeader('content-type', 'text/html; charset=utf-8');
    res.end(`<!doctype html><html><body><h1>Test identity provider</h1>
<form method="post" action="/interaction/${escape(uid)}">
<input name="pid"> <input name="acr" value="idporten-loa-high">
<button name="action" value="login">Log in</button>
<button name="action" value="cancel">Cancel</button></form></body></html>`);
    return;
  }
  const form = await readForm(req);
  if (form.action === 'cancel') {
    await provider.interactionFinished(req, res, {
      error: 'access_denied', error_description: 'End-User aborted interaction',
    }, { mergeWithLastSubmission: false });
    return;
  }
  const { params } = details;
  const grant = new provider.Grant({ accountId: form.pid, clientId: params.client_id });
  grant.addOIDCScope(params.scope);
  const grantId = await grant.save();
  await provider.interactionFinished(req, res, {
    login: { accountId: form.pid, acr: form.acr || 'idporten-loa-high', amr: ['BankID'] },
    consent: { grantId },
  }, { mergeWithLastSubmission: true });
}

const handler = provider.callback();
server.on('request', (req, res) => {
  const match = /^\/interaction\/([^/?]+)/.exec(req.url);
  if (!match) { handler(req, res); return; }
  interaction(req, res, match[1]).catch((err) => {
    console.error('interaction failed', err);
    res.statusCode = 400;
    res.end(String(err));
  });
});
console.log(`listening ${issuer}`);
