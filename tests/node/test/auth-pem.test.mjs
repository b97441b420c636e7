// The connect-time auth suite (auth.test.mjs) with an RS256 key from JWT_PUBLIC_KEY_FILE.
import './mode-pem.mjs';
import './auth.test.mjs';
