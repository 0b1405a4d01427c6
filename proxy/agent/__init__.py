"""The device agent (`gateway agent ...`): enroll, check client certificates, report with proof.

Modules: ``token`` (enrollment tokens), ``state`` (the 0600 state file), ``transport`` (HTTP(S)
to the server with the pinned certificate), ``locations`` (PEM files and NSS databases),
``checks`` (rules against candidates), ``report`` (nonce, proof, results), ``run`` (the loop).
"""
