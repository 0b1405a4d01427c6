"""The device agent (``gateway agent ...``, or ``gateway-agent``): enroll, check client
certificates, report with proof, keep the trust stores in step with the gateway's root CAs.

A separate program: it talks to the server over HTTP(S) only and imports nothing of ``proxy/``.
Modules: ``token`` (enrollment tokens), ``state`` (the 0600 state file), ``transport`` (HTTP(S)
to the server with the pinned certificate), ``locations`` (PEM files and NSS databases),
``checks`` (rules against candidates), ``report`` (nonce, proof, results), ``session`` (one
enrolled agent), ``run`` (the loop), ``trust_store`` (what the trust stores share),
``trust_system`` and ``trust_nss`` (the stores), ``trust`` (one CA sync over them), ``cli`` and
``output`` (the command line and what it prints), ``errors`` (``AgentError``).

macOS and Windows (issue 15): ``host`` (which platform, and the runner of its tools), ``runner``
(running a tool; recorded output in tests; dry runs), ``macos_security`` and
``windows_powershell`` (one keychain / one certificate store through the platform's tool),
``stores_macos`` and ``stores_windows`` (posture candidates there), ``store_key`` (a key the
platform signs with), ``trust_macos`` and ``trust_windows`` (their trust stores), ``state_path``
(the state file's place per platform).
"""
