"""OAuth 2.x / OpenID Connect and consent logic over abstract stores. No web framework here."""
