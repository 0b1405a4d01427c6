"""The device agent (``gateway agent ...``, or ``gateway-agent``): enroll, check client
certificates, report with proof, keep the trust stores in step with the gateway's root CAs.

A separate program: it talks to the server over HTTP(S) only and imports nothing of ``proxy/``.
Modules: ``token`` (enrollment tokens), ``state`` (the 0600 state file), ``transport`` (HTTP(S)
to the server with the pinned certificate), ``locations`` (PEM files and NSS databases),
``checks`` (rules against candidates), ``report`` (nonce, proof, results), ``session`` (one
enrolled agent), ``run`` (the loop), ``trust_store`` (what the trust stores share),
``trust_system`` and ``trust_nss`` (the stores), ``trust`` (one CA sync over them), ``cli`` and
``output`` (the command line and what it prints), ``errors`` (``AgentError``).
"""
