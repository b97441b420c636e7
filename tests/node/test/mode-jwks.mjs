// Imported before a suite: its servers verify with keys from a JWKS (see helpers.mjs KEY_MODE).
process.env.AEGISX_KEY_MODE = 'jwks';
