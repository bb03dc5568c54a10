// openid-client (a certified OpenID Connect relying party library) against the gateway:
// discovery, PAR + PKCE S256 + DPoP code flow, ID token validation, DPoP userinfo, DPoP refresh,
// and the RP-initiated logout URL.
// Driven by tests/oidc/test_openid_client.py: this prints {"authorize": url} on stdout, reads
// the redirect the browser was sent to on stdin, then prints the results as one JSON line.
import * as client from 'openid-client'
import { createInterface } from 'node:readline'

const env = process.env
const issuer = new URL(env.ISSUER)
const config = await client.discovery(
  issuer, env.CLIENT_ID, undefined, client.ClientSecretBasic(env.CLIENT_SECRET),
  { execute: [client.allowInsecureRequests] })   // the test server is plain http on loopback

const dpopKeys = await client.randomDPoPKeyPair(env.DPOP_ALG || 'ES256')
const DPoP = client.getDPoPHandle(config, dpopKeys)
const verifier = client.randomPKCECodeVerifier()
const state = client.randomState()
const nonce = client.randomNonce()
const url = await client.buildAuthorizationUrlWithPAR(config, {
  redirect_uri: env.REDIRECT_URI, scope: 'openid profile', state, nonce,
  code_challenge: await client.calculatePKCECodeChallenge(verifier),
  code_challenge_method: 'S256',
}, { DPoP })
process.stdout.write(JSON.stringify({ authorize: url.href }) + '\n')

const rl = createInterface({ input: process.stdin })
const callback = await new Promise((resolve) => rl.once('line', resolve))
rl.close()

const tokens = await client.authorizationCodeGrant(config, new URL(callback), {
  pkceCodeVerifier: verifier, expectedState: state, expectedNonce: nonce,
  idTokenExpected: true,
}, undefined, { DPoP })
const claims = tokens.claims()
const userinfo = await client.fetchUserInfo(config, tokens.access_token, claims.sub, { DPoP })
const refreshed = await client.refreshTokenGrant(config, tokens.refresh_token, undefined, { DPoP })
const again = await client.fetchUserInfo(config, refreshed.access_token, claims.sub, { DPoP })
// RP-Initiated Logout 1.0: the URL openid-client builds from discovery's end_session_endpoint
const endSession = client.buildEndSessionUrl(config, {
  id_token_hint: tokens.id_token, post_logout_redirect_uri: env.POST_LOGOUT_URI, state,
})
process.stdout.write(JSON.stringify({
  token_type: tokens.token_type, sub: claims.sub, aud: claims.aud, nonce: claims.nonce,
  userinfo, refreshed_token_type: refreshed.token_type,
  refreshed_differs: refreshed.refresh_token !== tokens.refresh_token, again,
  access_token: tokens.access_token, end_session: endSession.href, state,
  refresh_token: refreshed.refresh_token,
}) + '\n')
