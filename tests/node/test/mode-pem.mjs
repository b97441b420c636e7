// Imported before a suite: its servers verify with an RS256 PEM key (see helpers.mjs KEY_MODE).
process.env.AEGISX_KEY_MODE = 'pem';
