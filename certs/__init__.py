"""Gateway's certificate library: CA generation and upload validation, CA lifecycle rules, leaf
issuance with an LRU cache, the empty CRL, and key sealing at rest.

Imports only the standard library and ``cryptography``. See docs/architecture.md for the API.
"""
