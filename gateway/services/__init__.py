"""Use cases: issue_code, verify_code, exchange tokens, link credentials, consents.

They depend on small interfaces (`ports`), never on a web framework or a store driver.
"""
