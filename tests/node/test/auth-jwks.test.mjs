// The connect-time auth suite (auth.test.mjs) with keys from a JWKS (RS256 over loopback HTTP):
// the refusals and token sources behave the same in every verification mode.
import './mode-jwks.mjs';
import './auth.test.mjs';
